// No live worker takes backups: a request is refused (503 no_worker, Retry-After) instead of
// queuing a job that holds the backup group for an hour; GET /admin/backups shows the workers.
import { Redis } from 'ioredis';
import request from 'supertest';
import { PublishedBackupInfo } from '../../src/services/backup/published-info.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { startWorker } from '../support/worker.ts';
import { FakeBackupTool } from '../support/fakes.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

describe('backup requests with no live worker', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  const tool = new FakeBackupTool();
  const prefix = uniquePrefix();
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'backup-no-worker' });
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), BACKUP_STATUS_INTERVAL_MS: '200' }, prefix);
    // An inventory a worker published before it went away (still fresh enough to serve).
    await PublishedBackupInfo.publish(redis, prefix, await tool.info());
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
    await redis.quit();
  });

  it('503 no_worker with Retry-After, nothing queued, the group stays free; the inventory shows 0 workers', async () => {
    const backup = await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' });
    expect({ status: backup.status, code: backup.body.error.code }).toEqual({ status: 503, code: 'no_worker' });
    expect(backup.headers['retry-after']).toBe('30');
    const validate = await request(api.url).post('/admin/backups/validate').set(auth).send({});
    expect({ status: validate.status, code: validate.body.error.code }).toEqual({ status: 503, code: 'no_worker' });
    expect(await redis.get(`${prefix}jobs:group:backup`)).toBeNull();
    expect(await redis.llen(`${prefix}jobs:queue`)).toBe(0);
    const inv = await request(api.url).get('/admin/backups').set(viewer);
    expect(inv.status).toBe(200);
    expect(inv.body.workers).toEqual({ backup: 0, 'backup.validate': 0 });
  });

  it('a worker that starts is counted at once and takes the next request; once stopped it no longer counts', async () => {
    const worker = await startWorker(
      { ...mediaEnv('PRIMARY', s3), BACKUP_STATUS_INTERVAL_MS: '200', INSTANCE_ID: 'nw-worker' },
      prefix,
      undefined,
      tool,
    );
    try {
      expect((await request(api.url).get('/admin/backups').set(viewer)).body.workers).toMatchObject({ backup: 1 });
      const res = await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' });
      expect(res.status).toBe(202);
    } finally {
      await worker.stop();
    }
    await PublishedBackupInfo.publish(redis, prefix, await tool.info());
    const after = await request(api.url).post('/admin/backups').set(auth).send({ type: 'incr' });
    expect({ status: after.status, code: after.body.error.code }).toEqual({ status: 503, code: 'no_worker' });
  });
});
