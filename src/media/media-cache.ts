import type { Redis } from 'ioredis';
import type { MediaMetadata } from './media-repository.ts';
import { isReady } from '../redis/redis-client.ts';

const TOMBSTONE = 'deleted';
const TOMBSTONE_TTL_SECONDS = 120;

export type CachedMeta = MediaMetadata | 'deleted' | undefined;

export interface MediaCache {
  get(key: string): Promise<CachedMeta>;
  /** Fills the cache from the database; never overwrites a tombstone or a newer write. */
  fill(meta: MediaMetadata): Promise<void>;
  /** Records a fresh write, replacing whatever was cached. */
  put(meta: MediaMetadata): Promise<void>;
  /** Marks a key deleted; throws when that cannot be recorded, so the delete does not proceed. */
  tombstone(key: string): Promise<void>;
  /** Drops every cached entry (after a media switch). */
  clear(): Promise<number>;
}

/**
 * Metadata cache in Redis. A read that finds Redis unavailable is a miss, never an error; a
 * delete that cannot write its tombstone is refused, because a surviving entry would serve a
 * deleted object once Redis is back.
 */
export class RedisMediaCache implements MediaCache {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlSeconds: number,
  ) {}

  private k(key: string): string {
    return `${this.prefix}media:meta:${key}`;
  }

  async get(key: string): Promise<CachedMeta> {
    if (!isReady(this.redis)) return undefined;
    try {
      const raw = await this.redis.get(this.k(key));
      if (raw === null) return undefined;
      if (raw === TOMBSTONE) return TOMBSTONE;
      const parsed = JSON.parse(raw) as MediaMetadata & { createdAt: string };
      return { ...parsed, createdAt: new Date(parsed.createdAt) };
    } catch {
      return undefined;
    }
  }

  async fill(meta: MediaMetadata): Promise<void> {
    if (!isReady(this.redis)) return;
    await this.redis.set(this.k(meta.key), JSON.stringify(meta), 'EX', this.ttlSeconds, 'NX').catch(() => undefined);
  }

  async put(meta: MediaMetadata): Promise<void> {
    if (!isReady(this.redis)) return;
    await this.redis.set(this.k(meta.key), JSON.stringify(meta), 'EX', this.ttlSeconds).catch(() => undefined);
  }

  async tombstone(key: string): Promise<void> {
    await this.redis.set(this.k(key), TOMBSTONE, 'EX', TOMBSTONE_TTL_SECONDS);
  }

  async clear(): Promise<number> {
    let removed = 0;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}media:meta:*`, 'COUNT', 500);
      cursor = next;
      // Tombstones stay: they guard against serving deleted objects.
      const values = keys.length > 0 ? await this.redis.mget(keys) : [];
      const live = keys.filter((_, i) => values[i] !== TOMBSTONE);
      if (live.length > 0) removed += await this.redis.del(...live);
    } while (cursor !== '0');
    return removed;
  }
}
