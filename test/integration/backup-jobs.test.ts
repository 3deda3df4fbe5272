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
    const env = { ...mediaEnv('PRIMARY', s3), BACKUP_STATUS_INTERVAL_MS: '200' };
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
    expect(busy.body.error.job).toEqual({ id: first.body.job.id, href: `/admin/jobs/${first.body.job.id}` });
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
