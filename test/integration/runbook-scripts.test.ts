import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { script } from '../support/run-script.ts';

describe('runbook scripts', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'runbook-scripts' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('enable, inspect and disable read-only mode, printing the server JSON', async () => {
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    const on = await script('enable-readonly-mode.sh', ['--reason', 'db "corrupted"', '--ttl', '600'], env);
    expect(on.code).toBe(0);
    expect(JSON.parse(on.stdout).readOnly).toMatchObject({ enabled: true, reason: 'db "corrupted"' });
    const state = await script('dr-state.sh', [], env);
    expect(JSON.parse(state.stdout).readOnly.enabled).toBe(true);
    const off = await script('disable-readonly-mode.sh', ['--reason', 'restored'], env);
    expect(off.code).toBe(0);
    expect(JSON.parse(off.stdout).readOnly.enabled).toBe(false);
  });

  it('exits non-zero on a refused change, a missing reason, a missing token or an unreachable API', async () => {
    const viewer = await script('enable-readonly-mode.sh', ['--reason', 'x'], { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: VIEWER_TOKEN });
    expect(viewer.code).toBe(1);
    expect(JSON.parse(viewer.stdout).error.code).toBe('forbidden');
    expect(viewer.stderr).toContain('HTTP 403');
    expect((await script('enable-readonly-mode.sh', [], { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN })).code).toBe(2);
    expect((await script('dr-state.sh', [], { SAV3_API_URL: api.url })).code).toBe(2);
    expect((await script('dr-state.sh', [], { SAV3_API_URL: 'http://127.0.0.1:1', SAV3_ADMIN_TOKEN: OPERATOR_TOKEN })).code).toBe(3);
  });
});

describe('database runbook scripts', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'runbook-db-scripts' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('verify-database passes on a healthy primary; promote and switch report refusals with a non-zero exit', async () => {
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    const verify = await script('verify-database.sh', [], env);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout).status).toBe('pass');
    const promote = await script('promote-replica.sh', ['--max-lag', '10'], env);
    expect(promote.code).toBe(1);
    expect(JSON.parse(promote.stdout).error.checks[0]).toMatchObject({ name: 'replica_configured', ok: false });
    const dry = await script('promote-replica.sh', ['--dry-run'], env);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, wouldPromote: false });
    const sw = await script('switch-database-connection.sh', ['--to', 'replica'], env);
    expect(sw.code).toBe(1);
    expect((await script('switch-database-connection.sh', ['--to', 'elsewhere'], env)).code).toBe(2);
    const same = await script('switch-database-connection.sh', ['--to', 'primary', '--dry-run'], env);
    expect(JSON.parse(same.stdout)).toMatchObject({ dryRun: true, wouldSwitch: false });
  });
});

describe('media runbook scripts', () => {
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    primary = await startS3Server({ bucket: 'runbook-media-primary' });
    backup = await startS3Server({ bucket: 'runbook-media-backup' });
    api = await startInstance({ ...mediaEnv('PRIMARY', primary), ...mediaEnv('BACKUP', backup), MEDIA_SYNC_INLINE_MAX: '1' });
  });
  afterAll(async () => {
    await api.stop();
    await primary.destroy();
    await backup.destroy();
  });

  it('switch to s3-backup, verify, sync (following the job), switch back', async () => {
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    for (const n of [1, 2, 3]) expect((await fetch(`${api.url}/media/rb/${n}`, { method: 'PUT', body: `object ${n}` })).status).toBe(201);
    const sw = await script('switch-media-backend.sh', ['--to', 's3-backup'], env);
    expect(sw.code).toBe(0);
    expect(JSON.parse(sw.stdout)).toMatchObject({ changed: true, to: 'backup' });
    const verify = await script('verify-media-access.sh', [], env);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout).status).toBe('pass');
    const sync = await script('sync-media-files.sh', ['--from', 'primary', '--to', 's3-backup'], env);
    expect(sync.code).toBe(0);
    expect(sync.stdout).toContain('"status": "succeeded"');
    expect((await script('switch-media-backend.sh', ['--to', 'minio'], env)).code).toBe(0);
    expect((await script('switch-media-backend.sh', ['--to', 'nowhere'], env)).code).toBe(2);
  });
});
