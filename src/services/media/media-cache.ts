import type { MediaBackendName } from '../../domain.ts';
import type { Redis } from 'ioredis';
import type { MediaMetadata, MediaRepository } from './media-repository.ts';
import { isReady } from '../../adapters/redis-client.ts';

const DELETED = 'deleted';

/**
 * Added to the writer's wait when it could not update Redis: covers the Redis round trip between
 * the moment an entry's remaining lifetime is computed here and the moment Redis applies it.
 */
export const CACHE_SETTLE_MARGIN_MS = 500;

/** The clock of `observedAt`: monotonic, so a step of the wall clock cannot extend an entry's life. */
export function cacheClock(): number {
  return performance.now();
}

export type CachedMeta = MediaMetadata | 'deleted' | undefined;

export interface MediaCache {
  get(key: string): Promise<CachedMeta>;
  /**
   * Best effort, for a reader: records metadata read from the database by a read that began at
   * `observedAt` (`cacheClock()`); an entry with a higher seq wins.
   */
  put(meta: MediaMetadata, observedAt: number): Promise<void>;
  /**
   * For a writer, after its commit (begun at `observedAt`) and before its acknowledgement: records
   * the new version or, when Redis cannot take it, waits until every entry that may name an
   * older version has expired. After it returns, no instance reads an older version of the key.
   */
  recordWrite(meta: MediaMetadata, observedAt: number): Promise<void>;
  /** The same for a committed delete (seq from the delete). */
  markDeleted(key: string, seq: number, observedAt: number): Promise<void>;
  /**
   * For a write whose outcome is unknown, or whose pointer has moved on since (its seq is not
   * known): returns once no entry observed before the call can be read any more.
   */
  invalidate(key: string): Promise<void>;
  /** Drops every cached entry (after a media switch). */
  clear(): Promise<number>;
}

/**
 * Writes an entry only over an older one (lower seq): concurrent writers and readers filling the
 * cache never move it backwards over a newer write it has already seen. ARGV[3] is the entry's
 * remaining lifetime in ms; a write whose lifetime is already over only removes an older entry.
 */
const SET_IF_NEWER = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local s = tonumber(string.match(cur, '^(%d+)|'))
  if s and s >= tonumber(ARGV[1]) then return 0 end
end
if tonumber(ARGV[3]) <= 0 then
  redis.call('DEL', KEYS[1])
  return 2
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1`;

/**
 * Metadata cache in Redis: each entry names one version (the content cache holds bytes by
 * version, so it serves only what this metadata names).
 *
 * Staleness bound. Every entry expires at most `ttlMs` after the database observation it comes
 * from began (the lifetime is computed from that instant, not from when the entry reaches Redis,
 * so a reader delayed between its database read and its cache write cannot extend an old
 * version's life). A writer updates the entry after its commit (seq-ordered, never backwards);
 * when it cannot (Redis unreachable from this instance, a timeout), it waits `ttlMs` plus a
 * margin before acknowledging, so every entry observed before its commit, on every instance,
 * has expired. Hence once a write or delete is acknowledged, no instance reads an older version
 * of its key from this cache, even if the writer dies right after, without any process having to
 * remember anything. A read that finds Redis unavailable is a miss (the database answers).
 */
export class RedisMediaCache implements MediaCache {
  private readonly ttlMs: number;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    ttlSeconds: number,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {
    this.ttlMs = ttlSeconds * 1000;
  }

  private k(key: string): string {
    return `${this.prefix}media:v3:${key}`;
  }

  async get(key: string): Promise<CachedMeta> {
    if (!isReady(this.redis)) return undefined;
    try {
      const raw = await this.redis.get(this.k(key));
      if (raw === null) return undefined;
      const value = raw.slice(raw.indexOf('|') + 1);
      if (value === DELETED) return DELETED;
      const parsed = JSON.parse(value) as Omit<MediaMetadata, 'createdAt'> & { createdAt: string; backends: MediaBackendName[] };
      return { ...parsed, createdAt: new Date(parsed.createdAt) };
    } catch {
      return undefined;
    }
  }

  async put(meta: MediaMetadata, observedAt: number): Promise<void> {
    // Never cache a placeholder without a real seq over a real entry.
    if (meta.seq <= 0) return;
    await this.write(meta.key, meta.seq, JSON.stringify(meta), observedAt, false);
  }

  async recordWrite(meta: MediaMetadata, observedAt: number): Promise<void> {
    if (meta.seq <= 0) return this.invalidate();
    if (!(await this.write(meta.key, meta.seq, JSON.stringify(meta), observedAt, true))) await this.settle();
  }

  async markDeleted(key: string, seq: number, observedAt: number): Promise<void> {
    if (!(await this.write(key, seq, DELETED, observedAt, true))) await this.settle();
  }

  /**
   * Waits out the TTL rather than deleting the entry: without the write's seq an unconditional
   * DEL could remove a newer writer's entry and let a reader's delayed fill of an older version
   * back in after that writer's acknowledgement. A rare path (a lost commit answer), so the wait
   * is affordable.
   */
  async invalidate(): Promise<void> {
    await this.settle();
  }

  /** Whether Redis applied the write (or already held a newer entry). */
  private async write(key: string, seq: number, value: string, observedAt: number, mustApply: boolean): Promise<boolean> {
    try {
      if (!isReady(this.redis)) return false;
      const remaining = Math.floor(observedAt + this.ttlMs - cacheClock());
      if (remaining <= 0 && !mustApply) return true;
      await this.redis.eval(SET_IF_NEWER, 1, this.k(key), seq, value, Math.max(0, remaining));
      return true;
    } catch {
      return false;
    }
  }

  /** Waits until every entry observed before now has expired. */
  private async settle(): Promise<void> {
    await this.sleep(this.ttlMs + CACHE_SETTLE_MARGIN_MS);
  }

  async clear(): Promise<number> {
    let removed = 0;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}media:v3:*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) removed += await this.redis.del(...keys);
    } while (cursor !== '0');
    return removed;
  }
}

/**
 * The repository's commits, each followed by its cache update (`recordWrite`, `markDeleted`)
 * before it returns. Wrapped by the write fence (fencedRepository), the update is part of the
 * write's commit: a barrier (read-only mode, a switch, the DR state lease running out) waits for
 * it, and a write still settling when the barrier gives up is not acknowledged.
 */
export function updatingCache(repository: MediaRepository, cache: MediaCache): MediaRepository {
  return {
    find: (key) => repository.find(key),
    list: (prefix, limit, after) => repository.list(prefix, limit, after),
    versionCommitted: (version) => repository.versionCommitted(version),
    async commitWrite(write) {
      const observedAt = cacheClock();
      const meta = await repository.commitWrite(write);
      await cache.recordWrite(meta, observedAt);
      return meta;
    },
    // Every argument goes on: the fence epoch (fencedRepository, outside) reaches the SQL.
    async commitDelete(key, fenceEpoch) {
      const observedAt = cacheClock();
      const seq = await repository.commitDelete(key, fenceEpoch);
      if (seq !== undefined) await cache.markDeleted(key, seq, observedAt);
      return seq;
    },
  };
}
