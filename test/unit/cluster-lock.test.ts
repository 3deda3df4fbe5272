import { ClusterLock } from '../../src/services/dr-state/cluster-lock.ts';
import { ConflictError } from '../../src/http/app-error.ts';
import { MemoryLockStore } from '../support/fakes.ts';

const options = { ttlMs: 1000, busyMessage: 'another database DR operation is running' };

async function conflictOf(promise: Promise<unknown>): Promise<ConflictError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConflictError);
  return err as ConflictError;
}

describe('ClusterLock', () => {
  it('runs fn holding the lock and releases it after, also when fn throws', async () => {
    const store = new MemoryLockStore();
    const locks = new ClusterLock(store, 'api-1');
    const seen = await locks.withLock(
      'database',
      'promote',
      async (lease) => {
        expect(lease.owner).toMatch(/^api-1:promote:/);
        return store.locks.get('database')?.owner;
      },
      options,
    );
    expect(seen).toMatch(/^api-1:promote:/);
    expect(store.locks.size).toBe(0);
    await expect(
      locks.withLock(
        'database',
        'switch',
        async () => {
          throw new Error('pg down');
        },
        options,
      ),
    ).rejects.toThrow('pg down');
    expect(store.locks.size).toBe(0);
  });

  it('a second holder gets 409 naming the first, and its fn never runs', async () => {
    const store = new MemoryLockStore();
    const a = new ClusterLock(store, 'api-1');
    const b = new ClusterLock(store, 'api-2');
    let ran = false;
    await a.withLock(
      'database',
      'promote',
      async () => {
        const err = await conflictOf(b.withLock('database', 'switch', async () => void (ran = true), options));
        expect(err.status).toBe(409);
        expect(err.message).toBe('another database DR operation is running');
        expect(err.extra).toEqual({ lock: 'database', holder: expect.stringMatching(/^api-1:promote:/) });
      },
      options,
    );
    expect(ran).toBe(false);
    // Other lock names are independent.
    await a.withLock('database', 'promote', () => b.withLock('media', 'media-switch', async () => 'ok', options), options);
  });

  it('two owners from one instance are still different owners', async () => {
    const store = new MemoryLockStore();
    const locks = new ClusterLock(store, 'api-1');
    const first = await locks.acquire('media-sync', 'sync', options);
    await conflictOf(locks.acquire('media-sync', 'sync', options));
    await first.release();
    await (await locks.acquire('media-sync', 'sync', options)).release();
  });

  it('a lease that expired is not renewed, and its release frees nobody else', async () => {
    const store = new MemoryLockStore();
    const a = new ClusterLock(store, 'api-1');
    const b = new ClusterLock(store, 'api-2');
    const lease = await a.acquire('media-sync', 'sync', options);
    store.now += 500;
    expect(await lease.renew()).toBe(true);
    store.now += 999;
    expect(await a.holder('media-sync')).toBe(lease.owner);
    store.now += 2;
    const other = await b.acquire('media-sync', 'sync', options);
    expect(await lease.renew()).toBe(false);
    await lease.release();
    expect(await b.holder('media-sync')).toBe(other.owner);
  });

  it('a store that does not answer: acquire fails (fn never runs), holder is null, renew is false, release does not throw', async () => {
    const store = new MemoryLockStore();
    const locks = new ClusterLock(store, 'api-1');
    const lease = await locks.acquire('database', 'promote', options);
    store.down = true;
    let ran = false;
    await expect(locks.withLock('media', 'media-switch', async () => void (ran = true), options)).rejects.toThrow('Connection is closed.');
    expect(ran).toBe(false);
    expect(await locks.holder('database')).toBeNull();
    expect(await lease.renew()).toBe(false);
    await expect(lease.release()).resolves.toBeUndefined();
    store.down = false;
    // The release was lost: the lock stays until its expiry, never longer.
    expect(await locks.holder('database')).toBe(lease.owner);
    store.now += options.ttlMs;
    expect(await locks.holder('database')).toBeNull();
  });

  it('a holder that is busy when the store fails to name it still gets 409 (holder null)', async () => {
    const store = new MemoryLockStore();
    await new ClusterLock(store, 'api-1').acquire('database', 'promote', options);
    const holder = store.holder.bind(store);
    store.holder = async () => {
      throw new Error('timeout');
    };
    const err = await conflictOf(new ClusterLock(store, 'api-2').acquire('database', 'switch', options));
    expect(err.extra).toEqual({ lock: 'database', holder: null });
    store.holder = holder;
  });
});
