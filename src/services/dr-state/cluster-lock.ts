import { randomUUID } from 'node:crypto';
import { ConflictError } from '../../http/app-error.ts';

/**
 * Where cluster-wide locks live (the port): Redis in production (RedisLockStore), a Map in unit
 * tests. Every lock has an expiry, so a holder that dies frees it; only the owner can renew or
 * release it.
 */
export interface LockStore {
  /** Takes `name` for `owner` for `ttlMs`; false when someone else holds it. */
  acquire(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Pushes the expiry out to `ttlMs` from now; false when the lock is no longer `owner`'s. */
  extend(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Frees `name` only if `owner` still holds it (never someone else's lock taken after ours expired). */
  release(name: string, owner: string): Promise<void>;
  holder(name: string): Promise<string | null>;
}

/**
 * The TTL of the DR operation locks (database promote/switch/switchover/reset, media switch). Short,
 * because a holder that dies (SIGKILL, OOM, host lost) mid-operation must not block every other
 * operator for long: its lock frees within this. A live holder renews it every DR_LOCK_RENEW_MS
 * (withLock does so by itself) for as long as it works. The price: a holder paused (GC, SIGSTOP)
 * longer than the TTL loses the lock and another operation may start; the DR state's
 * compare-and-set still lets only one of their state changes win.
 */
export const DR_LOCK_TTL_MS = 10_000;
export const DR_LOCK_RENEW_MS = 3_000;

/** The Redis commands RedisLockStore uses; an ioredis client is one. */
export interface LockRedis {
  set(key: string, value: string, pxToken: 'PX', milliseconds: number, nxToken: 'NX'): Promise<'OK' | null>;
  get(key: string): Promise<string | null>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

// Compare-and-delete and compare-and-expire in one atomic step each.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;
const EXTEND = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

export class RedisLockStore implements LockStore {
  /** `keyPrefix` + name is the Redis key of a lock. */
  constructor(
    private readonly redis: LockRedis,
    private readonly keyPrefix: string,
  ) {}

  async acquire(name: string, owner: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(this.keyPrefix + name, owner, 'PX', ttlMs, 'NX')) === 'OK';
  }

  async extend(name: string, owner: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.eval(EXTEND, 1, this.keyPrefix + name, owner, String(ttlMs))) === 1;
  }

  async release(name: string, owner: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.keyPrefix + name, owner);
  }

  holder(name: string): Promise<string | null> {
    return this.redis.get(this.keyPrefix + name);
  }
}

/** A held lock: renew it during long work, release it when done (both safe once it is lost). */
export interface LockLease {
  readonly name: string;
  /** `instanceId:operation:unique`: what a 409 names as the holder. */
  readonly owner: string;
  /** False when the lock expired and may be someone else's now (or the store did not answer). */
  renew(): Promise<boolean>;
  release(): Promise<void>;
}

export interface LockOptions {
  ttlMs: number;
  /** The 409's message when someone else holds the lock. */
  busyMessage: string;
}

/**
 * The one cluster-wide lock of the service (database DR operations, media switches, media syncs):
 * acquire, or 409 naming the holder; renew while working; release only if still the owner.
 */
export class ClusterLock {
  constructor(
    private readonly store: LockStore,
    private readonly instanceId: string,
  ) {}

  /**
   * Takes lock `name` for `operation`, or throws ConflictError (409) with `{ lock, holder }`.
   * A store error (Redis down) propagates: the caller's operation does not run without the lock.
   */
  async acquire(name: string, operation: string, options: LockOptions): Promise<LockLease> {
    const owner = `${this.instanceId}:${operation}:${randomUUID()}`;
    if (!(await this.store.acquire(name, owner, options.ttlMs))) {
      throw new ConflictError(options.busyMessage, { lock: name, holder: await this.holder(name) });
    }
    const store = this.store;
    return {
      name,
      owner,
      renew: () => store.extend(name, owner, options.ttlMs).catch(() => false),
      release: () => store.release(name, owner).catch(() => undefined),
    };
  }

  /**
   * Runs `fn` holding lock `name`, renewed every third of its TTL (at most every DR_LOCK_RENEW_MS)
   * while `fn` runs, so a short TTL bounds only how long a dead holder blocks others; the lock is
   * released however `fn` ends.
   */
  async withLock<T>(name: string, operation: string, fn: (lease: LockLease) => Promise<T>, options: LockOptions): Promise<T> {
    const lease = await this.acquire(name, operation, options);
    let renewing = true;
    const timer = setInterval(
      () => {
        void lease.renew().then((held) => {
          if (!held && renewing) renewing = false;
        });
      },
      Math.max(100, Math.min(DR_LOCK_RENEW_MS, Math.floor(options.ttlMs / 3))),
    );
    timer.unref();
    try {
      return await fn(lease);
    } finally {
      renewing = false;
      clearInterval(timer);
      await lease.release();
    }
  }

  /** Who holds lock `name` (null: nobody, or the store does not answer). */
  holder(name: string): Promise<string | null> {
    return this.store.holder(name).catch(() => null);
  }
}
