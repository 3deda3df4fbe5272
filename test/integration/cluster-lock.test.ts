import { Redis } from 'ioredis';
import { ClusterLock, RedisLockStore } from '../../src/services/dr-state/cluster-lock.ts';
import { ConflictError } from '../../src/http/app-error.ts';
import { eventually } from '../../support/common.ts';
import { uniquePrefix } from '../support/instance.ts';

const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('the cluster-wide lock in Redis', () => {
  // Two connections: two instances of the service.
  const redisA = new Redis(REDIS);
  const redisB = new Redis(REDIS);
  afterAll(() => Promise.all([redisA.quit(), redisB.quit()]));

  it('of many contenders with random delays, never two inside at once; every refusal names a live holder', async () => {
    const prefix = `${uniquePrefix()}dr:lock:`;
    const instances = [
      new ClusterLock(new RedisLockStore(redisA, prefix), 'api-a'),
      new ClusterLock(new RedisLockStore(redisB, prefix), 'api-b'),
    ];
    let inside = 0;
    let most = 0;
    const holders: string[] = [];
    const outcomes = await Promise.allSettled(
      Array.from({ length: 40 }, async (_, i) => {
        await new Promise((r) => setTimeout(r, Math.random() * 30));
        return instances[i % 2]!.withLock(
          'database',
          `op${i}`,
          async (lease) => {
            inside += 1;
            most = Math.max(most, inside);
            holders.push(lease.owner);
            await new Promise((r) => setTimeout(r, Math.random() * 10));
            inside -= 1;
          },
          { ttlMs: 10_000, busyMessage: 'busy' },
        );
      }),
    );
    expect(most).toBe(1);
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as ConflictError);
    expect(refused.length + holders.length).toBe(40);
    expect(holders.length).toBeGreaterThan(0);
    for (const err of refused) {
      expect(err).toBeInstanceOf(ConflictError);
      // The holder named was one that actually held it (or it was released in between: null).
      const holder = err.extra.holder as string | null;
      if (holder !== null) expect(holders).toContain(holder);
    }
    expect(await redisA.exists(`${prefix}database`)).toBe(0);
  });

  it('release and renewal by a non-owner do nothing', async () => {
    const prefix = `${uniquePrefix()}dr:lock:`;
    const store = new RedisLockStore(redisA, prefix);
    expect(await store.acquire('media', 'owner-1', 10_000)).toBe(true);
    expect(await store.acquire('media', 'owner-2', 10_000)).toBe(false);
    await store.release('media', 'owner-2');
    expect(await store.extend('media', 'owner-2', 60_000)).toBe(false);
    expect(await store.holder('media')).toBe('owner-1');
    expect(await redisA.pttl(`${prefix}media`)).toBeLessThanOrEqual(10_000);
    await store.release('media', 'owner-1');
    expect(await store.holder('media')).toBeNull();
  });

  it('a holder that dies frees the lock at its TTL; its late release does not free the next holder', async () => {
    const prefix = `${uniquePrefix()}dr:lock:`;
    const a = new ClusterLock(new RedisLockStore(redisA, prefix), 'api-a');
    const b = new ClusterLock(new RedisLockStore(redisB, prefix), 'api-b');
    const options = { ttlMs: 300, busyMessage: 'busy' };
    const dead = await a.acquire('media-sync', 'sync', options);
    await expect(b.acquire('media-sync', 'sync', options)).rejects.toBeInstanceOf(ConflictError);
    // Renewal keeps it past the first TTL.
    await new Promise((r) => setTimeout(r, 200));
    expect(await dead.renew()).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(await b.holder('media-sync')).toBe(dead.owner);
    // No more renewals: it expires, and b takes it.
    const holder = await eventually(
      () => b.holder('media-sync'),
      (h) => h === null,
      2000,
    );
    expect(holder).toBeNull();
    const next = await b.acquire('media-sync', 'sync', { ttlMs: 10_000, busyMessage: 'busy' });
    expect(await dead.renew()).toBe(false);
    await dead.release();
    expect(await a.holder('media-sync')).toBe(next.owner);
    await next.release();
    expect(await a.holder('media-sync')).toBeNull();
  });
});
