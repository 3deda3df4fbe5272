import type { MediaBackendName } from '../../domain.ts';
import type { Redis } from 'ioredis';
import type { MediaMetadata } from './media-repository.ts';
import { isReady } from '../../adapters/redis-client.ts';

const DELETED = 'deleted';
const DELETED_TTL_SECONDS = 120;

export type CachedMeta = MediaMetadata | 'deleted' | undefined;

export interface MediaCache {
  get(key: string): Promise<CachedMeta>;
  /** Records metadata read from the database or just committed; an entry with a higher seq wins. */
  put(meta: MediaMetadata): Promise<void>;
  /** Records a committed delete (seq from the delete); an entry with a higher seq wins. */
  markDeleted(key: string, seq: number): Promise<void>;
  /** Drops every cached entry (after a media switch). */
  clear(): Promise<number>;
}

/**
 * Only writes an entry whose seq is higher than the cached one: concurrent writers and readers
 * filling the cache from the database can leave it stale (an older version, complete and
 * self-consistent) but never move it backwards over a newer write it has already seen.
 */
const SET_IF_NEWER = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local s = tonumber(string.match(cur, '^(%d+)|'))
  if s and s >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1`;

/**
 * Metadata cache in Redis: each entry names one version (content is never cached). A read that
 * finds Redis unavailable is a miss, never an error. A write that commits while Redis is
 * unreachable remembers its entry and writes it as soon as Redis is back, so an entry cached
 * before the outage does not keep serving the replaced version (a Redis restart loses the cache
 * anyway); only if this instance stops first does the entry age out with its TTL.
 */
export class RedisMediaCache implements MediaCache {
  private readonly pending = new Map<string, { seq: number; value: string; ttl: number }>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlSeconds: number,
  ) {
    redis.on('ready', () => void this.flushPending());
  }

  private k(key: string): string {
    return `${this.prefix}media:v2:${key}`;
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

  async put(meta: MediaMetadata): Promise<void> {
    await this.write(meta.key, meta.seq, JSON.stringify(meta), this.ttlSeconds);
  }

  async markDeleted(key: string, seq: number): Promise<void> {
    await this.write(key, seq, DELETED, DELETED_TTL_SECONDS);
  }

  private async write(key: string, seq: number, value: string, ttl: number): Promise<void> {
    try {
      if (!isReady(this.redis)) throw new Error('redis not ready');
      await this.redis.eval(SET_IF_NEWER, 1, this.k(key), seq, value, ttl);
      this.pending.delete(key);
    } catch {
      const known = this.pending.get(key);
      if (!known || known.seq < seq) this.pending.set(key, { seq, value, ttl });
    }
  }

  /** Entries that could not be written while Redis was unreachable. */
  get pendingCount(): number {
    return this.pending.size;
  }

  async flushPending(): Promise<void> {
    for (const [key, entry] of [...this.pending]) {
      try {
        await this.redis.eval(SET_IF_NEWER, 1, this.k(key), entry.seq, entry.value, entry.ttl);
        if (this.pending.get(key) === entry) this.pending.delete(key);
      } catch {
        return;
      }
    }
  }

  async clear(): Promise<number> {
    let removed = 0;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}media:v2:*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) removed += await this.redis.del(...keys);
    } while (cursor !== '0');
    return removed;
  }
}
