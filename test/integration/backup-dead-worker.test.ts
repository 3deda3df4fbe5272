// A backup job whose worker was killed: given up after the queue's 30 s rule with a backup's own
// message, its group released (the next request is not refused naming a dead job), and corrected
// when the repository shows that pgBackRest finished the backup without the worker.
import { Redis } from 'ioredis';
import request from 'supertest';
import { JobQueue } from '../../src/services/jobs/job-queue.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { startWorker, type TestWorker } from '../support/worker.ts';
import { eventually } from '../../support/common.ts';
import { FakeBackupTool } from '../support/fakes.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

describe('a backup job whose worker was killed', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  let worker: TestWorker;
  const tool = new FakeBackupTool();
  const prefix = uniquePrefix();
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const queue = new JobQueue(redis, prefix);
  let deadId: string;
  let deadStartedAt: string;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'backup-dead-worker' });
    const env = { ...mediaEnv('PRIMARY', s3), BACKUP_STATUS_INTERVAL_MS: '200' };
    api = await startInstance(env, prefix);
    // The killed worker: it took the job (holding the backup group), then stopped reporting 40 s ago.
    const job = await queue.enqueue('backup', { type: 'full' }, { group: 'backup', requestedBy: 'test' });
    const claimed = (await queue.claim('killed-worker'))!;
    deadId = job.id;
    deadStartedAt = claimed.startedAt!;
    const past = new Date(Date.now() - 40_000).toISOString();
    await redis.set(`${prefix}jobs:${deadId}`, JSON.stringify({ ...claimed, updatedAt: past }), 'EX', 3600);
    worker = await startWorker({ ...env, INSTANCE_ID: 'live-worker' }, prefix, undefined, tool);
    await eventually(
      () => request(api.url).get('/admin/backups').set(viewer),
      (r) => r.status === 200,
      5000,
    );
  });
  afterAll(async () => {
    await api.stop();
    await worker.stop();
    await s3.destroy();
    await redis.quit();
  });

  it("reads failed with a backup's message (the queue's 30 s rule, not media sync's 15 s one)", async () => {
    const res = await request(api.url).get(`/admin/jobs/${deadId}`).set(viewer);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: deadId, kind: 'backup', status: 'failed', stale: true });
    expect(res.body.error).toContain('killed-worker');
    expect(res.body.error).toContain('30 s');
    expect(res.body.error).toContain('pgBackRest may still have finished the backup');
    expect(res.body.error).not.toMatch(/run the sync again|15 s/);
  });

  it('frees its group: the next backup request is accepted, not refused naming the dead job', async () => {
    const res = await request(api.url).post('/admin/backups').set(auth).send({ type: 'diff' });
    expect({ status: res.status, body: res.body }).toMatchObject({ status: 202 });
    expect(res.body.job.id).not.toBe(deadId);
    await eventually(
      () => request(api.url).get(`/admin/jobs/${res.body.job.id}`).set(viewer),
      (r) => r.body.status === 'succeeded',
      10_000,
    );
    // That later job's backup (started after the dead job was given up) does not make it look successful.
    expect((await request(api.url).get(`/admin/jobs/${deadId}`).set(viewer)).body.status).toBe('failed');
  });

  it('is corrected when the repository shows that the orphaned pgBackRest finished the backup', async () => {
    const base = tool.backups[0]!;
    // pgBackRest started when the job did (its times are whole seconds).
    const at = new Date(Math.floor(Date.parse(deadStartedAt) / 1000) * 1000).toISOString();
    tool.backups.push({ ...base, label: '20261126-000001F', startedAt: at, stoppedAt: at });
    const res = await eventually(
      () => request(api.url).get(`/admin/jobs/${deadId}`).set(viewer),
      (r) => r.body.status === 'succeeded',
      10_000,
    );
    expect(res.body).toMatchObject({ status: 'succeeded', error: null, result: { label: '20261126-000001F' } });
    expect(res.body.reconciled).toContain('pgBackRest finished backup 20261126-000001F without it');
  });
});
