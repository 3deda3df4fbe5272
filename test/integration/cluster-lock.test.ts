import { Redis } from 'ioredis';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterLock, DR_LOCK_TTL_MS, RedisLockStore } from '../../src/services/dr-state/cluster-lock.ts';
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

  it('withLock renews the lock by itself while its work runs past the TTL', async () => {
    const prefix = `${uniquePrefix()}dr:lock:`;
    const a = new ClusterLock(new RedisLockStore(redisA, prefix), 'api-a');
    const b = new ClusterLock(new RedisLockStore(redisB, prefix), 'api-b');
    const options = { ttlMs: 600, busyMessage: 'busy' };
    await a.withLock(
      'database',
      'promote',
      async (lease) => {
        await new Promise((r) => setTimeout(r, 2000));
        // Over three TTLs later, still ours.
        expect(await b.holder('database')).toBe(lease.owner);
        await expect(b.acquire('database', 'switch', options)).rejects.toBeInstanceOf(ConflictError);
      },
      options,
    );
    expect(await b.holder('database')).toBeNull();
  });

  // Issue 10 F3: a promote handler SIGKILLed mid-operation held the database lock for 120 s.
  it('the DR lock of a holder process killed with SIGKILL frees within DR_LOCK_TTL_MS', async () => {
    expect(DR_LOCK_TTL_MS).toBeLessThanOrEqual(10_000);
    const prefix = `${uniquePrefix()}dr:lock:`;
    const script = `
      import { Redis } from 'ioredis';
      import { ClusterLock, DR_LOCK_TTL_MS, RedisLockStore } from ${JSON.stringify(join(__dirname, '..', '..', 'src', 'services', 'dr-state', 'cluster-lock.ts'))};
      const lock = new ClusterLock(new RedisLockStore(new Redis(${JSON.stringify(REDIS)}), ${JSON.stringify(prefix)}), 'api-dying');
      await lock.withLock('database', 'promote', () => { console.log('held'); return new Promise(() => setInterval(() => {}, 1000)); }, { ttlMs: DR_LOCK_TTL_MS, busyMessage: 'busy' });
    `;
    // Inside the repository, so the holder resolves its packages.
    const cache = join(__dirname, '..', '..', 'node_modules', '.cache');
    mkdirSync(cache, { recursive: true });
    const dir = mkdtempSync(join(cache, 'sav3-lock-holder-'));
    writeFileSync(join(dir, 'holder.mts'), script);
    const child = spawn(process.execPath, ['--import', 'tsx', join(dir, 'holder.mts')], {
      cwd: join(__dirname, '..', '..'),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => c.toString().includes('held') && resolve());
      child.on('exit', (code) => reject(new Error(`holder exited with ${code}`)));
    });
    const b = new ClusterLock(new RedisLockStore(redisB, prefix), 'api-b');
    // Alive past its TTL: renewed.
    await new Promise((r) => setTimeout(r, DR_LOCK_TTL_MS + 1000));
    expect(await b.holder('database')).toMatch(/^api-dying:promote:/);
    child.kill('SIGKILL');
    const killedAt = Date.now();
    await eventually(
      () => b.holder('database'),
      (h) => h === null,
      DR_LOCK_TTL_MS + 2000,
      100,
    );
    expect(Date.now() - killedAt).toBeLessThanOrEqual(DR_LOCK_TTL_MS + 500);
    const lease = await b.acquire('database', 'promote', { ttlMs: DR_LOCK_TTL_MS, busyMessage: 'busy' });
    await lease.release();
    rmSync(dir, { recursive: true, force: true });
  }, 40_000);
});
