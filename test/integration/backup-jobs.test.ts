import { Redis } from 'ioredis';
import request from 'supertest';
import { PublishedBackupInfo } from '../../src/services/backup/published-info.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { startWorker, type TestWorker } from '../support/worker.ts';
import { eventually } from '../../support/common.ts';
import { FakeBackupTool } from '../support/fakes.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

describe('backup jobs from an API instance without pgBackRest to a worker that has it', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  let worker: TestWorker;
  // The first backup fails, later ones add to the list.
  const tool = new FakeBackupTool({ failures: 1 });
  const prefix = uniquePrefix();
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'backup-jobs' });
    const env = { ...mediaEnv('PRIMARY', s3), BACKUP_STATUS_INTERVAL_MS: '200', BACKUP_RUNNING_MAX: '2s' };
    api = await startInstance(env, prefix);
    worker = await startWorker({ ...env, INSTANCE_ID: 'jobs-worker' }, prefix, undefined, tool);
  });
  afterAll(async () => {
    await api.stop();
    await worker.stop();
    await s3.destroy();
    await redis.quit();
  });

  it('the API serves the inventory the worker published', async () => {
    const res = await eventually(
      () => request(api.url).get('/admin/backups').set(viewer),
      (r) => r.status === 200,
      5000,
    );
    expect(res.body.backups.map((b: { label: string }) => b.label)).toEqual(['20261125-000000F']);
  });

  it("a failed backup is a failed job with pgBackRest's message; it frees the way for the next, which succeeds", async () => {
    let release = () => {};
    tool.gate = new Promise<void>((r) => (release = r));
    const first = await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' });
    expect(first.status).toBe(202);
    // While it is queued or running, another backup is refused, naming the job and where to poll it.
    const busy = await request(api.url).post('/admin/backups').set(auth).send({ type: 'incr' });
    release();
    tool.gate = undefined;
    expect(busy.status).toBe(409);
    expect(busy.body.error.job).toMatchObject({ id: first.body.job.id, href: `/admin/jobs/${first.body.job.id}` });
    const failed = await eventually(
      async () => (await request(api.url).get(`/admin/jobs/${first.body.job.id}`).set(viewer)).body,
      (j) => j.status === 'failed',
      10_000,
    );
    expect(failed).toMatchObject({
      status: 'failed',
      error: expect.stringContaining('unable to find primary cluster'),
      instanceId: 'jobs-worker',
    });
    const second = await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' });
    expect(second.status).toBe(202);
    const done = await eventually(
      async () => (await request(api.url).get(`/admin/jobs/${second.body.job.id}`).set(viewer)).body,
      (j) => j.status !== 'queued' && j.status !== 'running',
      10_000,
    );
    expect(done).toMatchObject({ status: 'succeeded', result: { label: '20261126-000000F', type: 'full' } });
    const metrics = (await request(worker.url).get('/metrics')).text;
    expect(metrics).toContain('sav3_jobs_total{kind="backup",result="failed"} 1');
    expect(metrics).toContain('sav3_jobs_total{kind="backup",result="succeeded"} 1');
    await eventually(
      () => request(api.url).get('/admin/backups').set(viewer),
      (r) => r.body.backups?.length === 2,
      5000,
    );
  });

  // Outside attack on #13, finding 8: a worker whose pgBackRest hangs keeps its backup job running
  // (it heartbeats: the worker lives) and every backup is refused until BACKUP_TIMEOUT_MS (6 h).
  it('a backup hung beyond BACKUP_RUNNING_MAX is reported (running, overdue, metric) and named in the 409 with its age; not stopped', async () => {
    let release = () => {};
    tool.gate = new Promise<void>((r) => (release = r));
    try {
      const hung = await request(api.url).post('/admin/backups').set(auth).send({ type: 'diff' });
      expect(hung.status).toBe(202);
      const id = hung.body.job.id as string;
      const overdue = await eventually(
        async () => (await request(api.url).get('/admin/backups').set(viewer)).body,
        (b) => b.running?.overdue === true,
        10_000,
      );
      expect(overdue.running).toMatchObject({
        job: { id, href: `/admin/jobs/${id}`, kind: 'backup', status: 'running', instanceId: 'jobs-worker', input: { type: 'diff' } },
        maxSeconds: 2,
      });
      expect(overdue.running.ageSeconds).toBeGreaterThan(2);
      expect(Date.now() - Date.parse(overdue.running.job.lastHeartbeatAt)).toBeLessThan(10_000); // the worker lives
      const busy = await request(api.url).post('/admin/backups').set(auth).send({ type: 'incr' });
      expect(busy.status).toBe(409);
      expect(busy.body.error.message).toMatch(
        new RegExp(`a backup job is already running \\(${id}\\): for \\d+s, since .* on jobs-worker`),
      );
      expect(busy.body.error.job).toMatchObject({ id, status: 'running', instanceId: 'jobs-worker', ageSeconds: expect.any(Number) });
      const gauge = async (url: string) =>
        Number(/\nsav3_backup_running_seconds (\d+)/.exec((await request(url).get('/metrics')).text)?.[1]);
      await eventually(
        () => gauge(api.url),
        (n) => n > 2,
        5000,
      );
      await eventually(
        () => gauge(worker.url),
        (n) => n > 2,
        5000,
      );
      expect((await request(api.url).get('/metrics')).text).toContain('sav3_backup_running_max_seconds 2');
      // Never stopped for it: the job is still running.
      expect((await request(api.url).get(`/admin/jobs/${id}`).set(viewer)).body.status).toBe('running');
      release();
      await eventually(
        async () => (await request(api.url).get(`/admin/jobs/${id}`).set(viewer)).body,
        (j) => j.status === 'succeeded',
        10_000,
      );
      await eventually(
        async () => (await request(api.url).get('/admin/backups').set(viewer)).body,
        (b) => b.running === null,
        5000,
      );
      await eventually(
        () => gauge(api.url),
        (n) => n === 0,
        5000,
      );
    } finally {
      release();
      tool.gate = undefined;
    }
  }, 60_000);

  it('an inventory no worker refreshed for a while is refused (503), never served as current', async () => {
    await worker.stop();
    const stale = { at: Date.now() - 10 * 60_000, info: await tool.info() };
    await redis.set(PublishedBackupInfo.key(prefix), JSON.stringify(stale));
    api.service.backups.inventory.invalidate(); // past PGBACKREST_INFO_CACHE_MS
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(503);
    expect(res.body.error).toMatchObject({
      code: 'repository_unreachable',
      message: expect.stringContaining('no worker has read the pgBackRest repository'),
    });
  });
});
