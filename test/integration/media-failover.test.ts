import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, ownDatabase, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { eventually, sha256Hex } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe('media failover between two S3 servers', () => {
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let a: TestInstance;
  let b: TestInstance;
  const prefix = uniquePrefix();
  const acked = new Map<string, string>();
  let db: Awaited<ReturnType<typeof ownDatabase>>;

  beforeAll(async () => {
    db = await ownDatabase();
    primary = await startS3Server({ bucket: 'mf-primary' });
    backup = await startS3Server({ bucket: 'mf-backup' });
    const env = { DATABASE_URL: db.url, ...mediaEnv('PRIMARY', primary), ...mediaEnv('BACKUP', backup), MEDIA_SYNC_INLINE_MAX: '3' };
    a = await startInstance({ ...env, INSTANCE_ID: 'media-a' }, prefix);
    b = await startInstance({ ...env, INSTANCE_ID: 'media-b' }, prefix);
  });
  afterAll(async () => {
    await a.stop();
    await b.stop();
    await primary.destroy();
    await backup.destroy();
    await db.drop();
  });

  const upload = async (api: TestInstance, key: string) => {
    const body = randomBytes(3000);
    const res = await request(api.url).put(`/media/${key}`).send(body);
    if (res.status === 201) acked.set(key, sha256Hex(body));
    return res;
  };
  const post = (api: TestInstance, path: string, body: object) => request(api.url).post(path).set(auth).send(body);

  it('uploads go to the primary; a dry-run switch proves the backup writable and changes nothing', async () => {
    for (let i = 0; i < 5; i += 1) expect((await upload(a, `mf/before-${i}`)).body.backend).toBe('primary');
    const dry = await post(a, '/admin/media/switch', { to: 'backup', dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, wouldSwitch: true });
    expect(dry.body.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([
      ['bucket_reachable', true],
      ['canary_upload', true],
      ['canary_download_checksum', true],
      ['canary_delete', true],
    ]);
    expect((await request(b.url).get('/health/media')).body.backend).toBe('primary');
  });

  it('when the primary S3 server stops, a switch sends every instance to the backup within a second', async () => {
    await primary.stop();
    const sw = await post(a, '/admin/media/switch', { to: 'backup' });
    expect(sw.status).toBe(200);
    expect(sw.body).toMatchObject({ changed: true, from: 'primary', to: 'backup', propagation: { applied: 2, total: 2 } });
    const res = await upload(b, 'mf/during-0');
    expect(res.status).toBe(201);
    expect(res.body.backend).toBe('backup');
    b.service.health.invalidate();
    expect((await request(b.url).get('/health/media')).body).toMatchObject({ status: 'healthy', backend: 'backup', bucket: 'mf-backup' });
    for (let i = 1; i < 5; i += 1) expect((await upload(a, `mf/during-${i}`)).status).toBe(201);
    const text = await eventually(
      async () => (await request(b.url).get('/metrics')).text,
      (t) => t.includes('sav3_dependency_up{dependency="media",target="primary"} 0'),
      3000,
    );
    expect(text).toContain('sav3_media_active_backend{backend="backup"} 1');
    expect(text).toContain('sav3_dependency_up{dependency="media",target="primary"} 0');
    expect((await request(a.url).get('/metrics')).text).toContain('sav3_failover_total{kind="media_switch",result="success"} 1');
  });

  it('refuses (412) to switch to an unreachable backend unless forced, and audits both', async () => {
    const refused = await post(a, '/admin/media/switch', { to: 'primary' });
    expect(refused.status).toBe(412);
    expect(refused.body.error.checks[0]).toMatchObject({ name: 'bucket_reachable', ok: false });
    const forced = await post(a, '/admin/media/switch', { to: 'primary', force: true });
    expect(forced.status).toBe(200);
    expect(forced.body.forced).toBe(true);
    expect((await post(a, '/admin/media/switch', { to: 'backup' })).status).toBe(200);
    const audit = await request(a.url).get('/admin/audit?limit=10').set(auth);
    const actions = audit.body.events.map((e: { action: string; result: string }) => `${e.action}:${e.result}`);
    expect(actions).toEqual(expect.arrayContaining(['media.switch:refused', 'media.switch:success']));
  });

  it('after the primary returns: sync copies what it lacks (inline, then as a job), a second sync gets 409', async () => {
    await primary.start();
    const same = await post(a, '/admin/media/sync', { from: 'backup', to: 'backup' });
    expect(same.status).toBe(400);
    expect(same.body.error).toMatchObject({ message: 'from and to must differ', details: { to: ['must differ from from'] } });
    const dry = await post(a, '/admin/media/sync', { from: 'backup', to: 'primary', dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, toCopy: 5 });
    expect(dry.body.items.every((i: { reason: string }) => i.reason === 'missing')).toBe(true);

    const job = await post(a, '/admin/media/sync', { from: 'backup', to: 'primary' });
    expect(job.status).toBe(202);
    expect(job.body).toMatchObject({ async: true, job: { status: 'running', total: 5, href: `/admin/jobs/${job.body.job.id}` } });
    const second = await post(b, '/admin/media/sync', { from: 'primary', to: 'backup' });
    expect([409, 200]).toContain(second.status);
    const done = await eventually(
      () => request(b.url).get(job.body.job.href).set(auth),
      (r) => r.body.status !== 'running',
      10_000,
    );
    expect(done.body).toMatchObject({ status: 'succeeded', copied: 5, total: 5, failed: [] });

    const back = await post(a, '/admin/media/sync', { from: 'primary', to: 'backup' });
    expect(back.status).toBe(202);
    await eventually(
      () => request(a.url).get(back.body.job.href).set(auth),
      (r) => r.body.status === 'succeeded',
      10_000,
    );
    const nothing = await post(a, '/admin/media/sync', { from: 'backup', to: 'primary' });
    expect(nothing.status).toBe(200);
    expect(nothing.body).toMatchObject({ async: false, toCopy: 0, copied: 0, status: 'succeeded' });
  });

  it('after switching back, every acknowledged upload is readable from the primary alone, with its sha256', async () => {
    expect((await post(b, '/admin/media/switch', { to: 'primary' })).status).toBe(200);
    await backup.stop();
    try {
      for (const [key, digest] of acked) {
        const res = await request(a.url).get(`/media/${key}`).buffer(true);
        expect(res.status).toBe(200);
        expect(res.headers['x-media-backend']).toBe('primary');
        expect(res.headers.etag).toBe(`"${digest}"`);
      }
      expect(acked.size).toBe(10);
    } finally {
      await backup.start();
    }
  });

  it('verify/media runs the canary checks on both backends and a consistency pass of metadata against content', async () => {
    const res = await post(a, '/admin/verify/media', {});
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      status: 'pass',
      active: 'primary',
      consistency: { status: 'pass', checked: 10, problemCount: 0, orphans: { primary: 0, backup: 0 } },
    });
    expect(res.body.backends.map((x: { backend: string; status: string }) => [x.backend, x.status])).toEqual([
      ['primary', 'pass'],
      ['backup', 'pass'],
    ]);
  });

  it('reports a job whose instance stopped as failed, loudly', async () => {
    const id = randomUUID();
    const direct = new Redis('redis://127.0.0.1:6379');
    const old = new Date(Date.now() - 60_000).toISOString();
    await direct.set(
      `${prefix}jobs:${id}`,
      JSON.stringify({
        id,
        kind: 'media.sync',
        status: 'running',
        from: 'primary',
        to: 'backup',
        total: 9,
        copied: 2,
        bytes: 0,
        failed: [],
        instanceId: 'gone-1',
        startedAt: old,
        updatedAt: old,
        finishedAt: null,
        error: null,
      }),
    );
    direct.disconnect();
    const res = await request(a.url).get(`/admin/jobs/${id}`).set(auth);
    expect(res.body).toMatchObject({ status: 'failed', stale: true, error: expect.stringContaining('gone-1') });
    expect((await request(a.url).get(`/admin/jobs/${randomUUID()}`).set(auth)).status).toBe(404);
    expect((await request(a.url).get('/admin/jobs/not-a-uuid').set(auth)).status).toBe(400);
  });
});

describe('continuous backup (MEDIA_CONTINUOUS_BACKUP=true)', () => {
  it('copies every committed version to the backup from the outbox, retrying while the backup is down; backlog and RPO exposure come from the outbox', async () => {
    const db = await ownDatabase();
    const primary = await startS3Server({ bucket: 'cb-primary' });
    const backup = await startS3Server({ bucket: 'cb-backup' });
    const api = await startInstance({
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', primary),
      ...mediaEnv('BACKUP', backup),
      MEDIA_CONTINUOUS_BACKUP: 'true',
    });
    const store = api.service.objectStores.get('backup')!;
    const versionOf = async (k: string) =>
      (
        await api.service.databaseClients
          .client()
          .$queryRawUnsafe<{ version: string }[]>('SELECT version::text AS version FROM media_objects WHERE key = $1', k)
      )[0]!.version;
    const outbox = () => api.service.media.versions.outboxStats();
    try {
      expect((await request(api.url).put('/media/cb/one').send('one')).status).toBe(201);
      const one = await versionOf('cb/one');
      expect(
        (
          await eventually(
            () => store.stat(`v/${one}`),
            (s) => s?.size === 3,
            5000,
          )
        )?.size,
      ).toBe(3);
      await eventually(outbox, (s) => s.backlog === 0, 3000);
      await backup.stop();
      expect((await request(api.url).put('/media/cb/two').send('two!')).status).toBe(201);
      const two = await versionOf('cb/two');
      await new Promise((resolve) => setTimeout(resolve, 1200));
      expect((await outbox()).backlog).toBe(1);
      const metrics = (await request(api.url).get('/metrics')).text;
      expect(metrics).toMatch(/^sav3_media_backup_backlog 1$/m);
      expect(Number(/^sav3_rpo_exposure_seconds\{component="media"\} ([\d.]+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0.5);
      await backup.start();
      expect(
        (
          await eventually(
            () => store.stat(`v/${two}`),
            (s) => s?.size === 4,
            8000,
          )
        )?.size,
      ).toBe(4);
      await eventually(outbox, (s) => s.backlog === 0, 3000);
    } finally {
      await api.stop();
      await primary.destroy();
      await backup.destroy();
      await db.drop();
    }
  });
});
