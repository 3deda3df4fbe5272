import { Redis } from 'ioredis';
import { JobGroupBusyError, JobQueue } from '../../src/services/jobs/job-queue.ts';
import { JobRunner } from '../../src/services/jobs/job-runner.ts';
import { captureLogger } from '../support/log-capture.ts';
import { uniquePrefix } from '../support/instance.ts';

const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('the shared job queue in Redis', () => {
  const redis = new Redis(REDIS);
  afterAll(() => redis.quit());

  it('two workers polling one queue run every job exactly once (random durations and failures)', async () => {
    const prefix = uniquePrefix();
    const queue = new JobQueue(redis, prefix);
    const runs = new Map<string, string[]>();
    const handler = (worker: string) => async (job: { id: string; input: unknown }) => {
      runs.set(job.id, [...(runs.get(job.id) ?? []), worker]);
      await new Promise((r) => setTimeout(r, Math.random() * 15));
      if ((job.input as { fail: boolean }).fail) throw new Error('planned failure');
      return { by: worker };
    };
    const { logger } = captureLogger('silent');
    const connections = [new Redis(REDIS), new Redis(REDIS)];
    const workers = ['w1', 'w2'].map(
      (id, i) =>
        new JobRunner({
          queue: new JobQueue(connections[i]!, prefix),
          handlers: new Map([['test.noop', handler(id)]]),
          instanceId: id,
          logger,
          pollMs: 5,
        }),
    );
    workers.forEach((w) => w.start());
    const ids: { id: string; fail: boolean }[] = [];
    for (let i = 0; i < 60; i += 1) {
      const fail = Math.random() < 0.2;
      ids.push({ id: (await queue.enqueue('test.noop', { fail }, { requestedBy: 'test' })).id, fail });
      if (Math.random() < 0.3) await new Promise((r) => setTimeout(r, Math.random() * 10));
    }
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const jobs = await Promise.all(ids.map((j) => queue.get(j.id)));
      if (jobs.every((j) => j?.status === 'succeeded' || j?.status === 'failed')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await Promise.all(workers.map((w) => w.stop()));
    await Promise.all(connections.map((c) => c.quit()));
    // Invariant: each job ran once, on one worker, and its final state says what happened.
    for (const { id, fail } of ids) {
      expect(runs.get(id)).toHaveLength(1);
      const job = await queue.get(id);
      expect(job?.status).toBe(fail ? 'failed' : 'succeeded');
      expect(job?.instanceId).toBe(runs.get(id)![0]);
    }
    const byWorker = workers.map((w) => w.ran.length);
    expect(byWorker[0]! + byWorker[1]!).toBe(60);
    expect(byWorker.every((n) => n > 0)).toBe(true);
  }, 30_000);

  it('of many concurrent requests for one exclusive group, exactly one is queued; the group frees when it finishes', async () => {
    const prefix = uniquePrefix();
    const queue = new JobQueue(redis, prefix);
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => queue.enqueue('backup', { type: 'full' }, { group: 'backup', requestedBy: 'test' })),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    const busy = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason);
    expect(
      busy.every((e) => e instanceof JobGroupBusyError && e.holder === (won[0] as PromiseFulfilledResult<{ id: string }>).value.id),
    ).toBe(true);
    const job = await queue.claim('w1');
    expect(job?.status).toBe('running');
    expect(await queue.claim('w2')).toBeUndefined();
    await expect(queue.enqueue('backup', {}, { group: 'backup', requestedBy: 'test' })).rejects.toBeInstanceOf(JobGroupBusyError);
    await queue.finish(job!, { status: 'succeeded' });
    await expect(queue.enqueue('backup', {}, { group: 'backup', requestedBy: 'test' })).resolves.toMatchObject({ status: 'queued' });
  });

  it('a running job whose worker stopped reporting is reported failed (stale), not running forever', async () => {
    const prefix = uniquePrefix();
    const queue = new JobQueue(redis, prefix);
    const { id } = await queue.enqueue('test.noop', {}, { requestedBy: 'test' });
    const job = await queue.claim('gone');
    expect(job?.id).toBe(id);
    // The worker died 40 s ago: rewrite its last heartbeat.
    await redis.set(`${prefix}jobs:${id}`, JSON.stringify({ ...job, updatedAt: new Date(Date.now() - 40_000).toISOString() }));
    expect(await queue.get(id)).toMatchObject({ status: 'failed', stale: true });
  });
});
