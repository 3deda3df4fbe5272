import { spawn } from 'node:child_process';
import { join } from 'node:path';
import request from 'supertest';
import { createScratchDatabase, databaseUrl, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { script, SCRIPTS } from '../support/run-script.ts';
import { eventually } from '../../support/common.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe('incident classification and the incident runbook scripts', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let proxy: TcpProxy;
  let api: TestInstance;
  let env: Record<string, string>;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'assess-media' });
    db = await createScratchDatabase('sav3_assess');
    proxy = await startTcpProxy(5432);
    const url = new URL(databaseUrl(db.name));
    url.port = String(proxy.port);
    api = await startInstance({
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: url.toString(),
      HEALTH_TIMEOUT_MS: '1500',
      HEALTH_INTERVAL_MS: '500',
    });
    env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
  });
  afterAll(async () => {
    await api?.stop();
    await proxy?.close();
    await s3?.destroy();
    await db?.drop();
  });

  const assess = async () =>
    (await request(api.url).post('/admin/incidents/assess').set(op).send({})).body as {
      severity: string | null;
      rule: string | null;
      rules: { rule: string; matched: boolean }[];
    };

  it('proposes a severity from the live state, naming the rule: none when healthy, P1 when uploads fail, P0 when the primary is down', async () => {
    const healthy = await eventually(assess, (a) => a.severity === null, 8000);
    expect(healthy.rules.map((r) => r.rule)).toEqual([
      'primary_database_down',
      'primary_database_unwritable',
      'media_uploads_failing',
      'no_replica',
      'replica_lagging',
      'backups_stale',
      'warnings_only',
    ]);

    await request(api.url).put('/admin/read-only').set(op).send({ enabled: true, reason: 'assessment test' });
    expect(await eventually(assess, (a) => a.severity === 'P1', 5000)).toMatchObject({ severity: 'P1', rule: 'media_uploads_failing' });
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: false, reason: 'done' });

    await s3.stop();
    expect(await eventually(assess, (a) => a.rule === 'media_uploads_failing', 8000)).toMatchObject({ severity: 'P1' });
    await s3.start();

    proxy.setMode('refuse');
    const down = await eventually(assess, (a) => a.severity === 'P0', 8000);
    expect(down.rule).toBe('primary_database_down');
    const script1 = await script('assess-incident.sh', ['--severity', 'auto'], env);
    expect(script1.code).toBe(0);
    expect(JSON.parse(script1.stdout)).toMatchObject({ severity: 'P0', rule: 'primary_database_down' });
    expect(script1.stderr).toContain('proposed severity: P0 (primary_database_down: database unhealthy (error connection_refused))');
    expect(script1.stdout).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
    proxy.setMode('pass');
    await eventually(assess, (a) => a.severity === null, 8000);
    expect(
      (
        await request(api.url)
          .post('/admin/incidents/assess')
          .set({ Authorization: `Bearer ${VIEWER_TOKEN}` })
          .send({})
      ).status,
    ).toBe(403);
  });

  it('create-incident-report.sh opens an incident and prints the filled-in template; monitor-recovery.sh follows it until resolved; the report prints the post-mortem', async () => {
    const created = await script(
      'create-incident-report.sh',
      [
        '--severity',
        'P1',
        '--title',
        'Media uploads failing',
        '--summary',
        'uploads fail for some users',
        '--components',
        'media-uploads',
        '--eta',
        '1 hour',
      ],
      env,
    );
    expect(created.code).toBe(0);
    const id = created.stdout.split('\n')[0]!;
    expect(id).toMatch(/^INC-\d{8}-\d+$/);
    expect(created.stdout).toContain('Subject: [P1] SAV3 System Incident - Media uploads failing');
    expect(created.stdout).toContain('ETA: 1 hour');
    expect(created.stdout).toContain(`Incident ID: ${id}`);
    // auto with nothing wrong proposes no incident and opens none.
    const none = await script('create-incident-report.sh', ['--title', 'nothing'], env);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('assessment proposes no incident');

    const child = spawn('bash', [join(SCRIPTS, 'monitor-recovery.sh'), '--incident-id', id], {
      env: { PATH: process.env.PATH ?? '', ...env, SAV3_ADMIN_TOKEN: VIEWER_TOKEN },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    // It says so once it follows the stream; only then can it see what happens next.
    await new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => d.toString().includes('following') && resolve()));
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: true, reason: 'protect uploads' });
    await request(api.url)
      .post(`/admin/incidents/${id}/updates`)
      .set(op)
      .send({ message: 'Uploads restored', visibility: 'public', status: 'resolved' });
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 8000))]);
    if (code === 'timeout') child.kill();
    expect(code).toBe(0);
    expect(out).toMatch(/dr\.state version \d+: read-only on/);
    expect(out).toMatch(new RegExp(`incident\\.timeline ${id}: read_only\\.set success \\(\\d+ ms\\)`));
    expect(out).toContain(`incident.updated ${id} resolved: Uploads restored`);
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: false, reason: 'done' });

    const report = await script('create-incident-report.sh', ['--incident-id', id], env);
    expect(report.code).toBe(0);
    expect(report.stdout).toContain(`# Post-mortem: ${id} — Media uploads failing`);
    expect(report.stdout).toContain('| read_only.set | success | ops |');
    expect((await script('monitor-recovery.sh', ['--incident-id', 'x'], env)).code).toBe(2);
  });
});
