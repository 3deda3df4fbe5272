import type { Redis } from 'ioredis';
import { RedisLockStore } from '../dr-state/cluster-lock.ts';
import type { AuditEvent, AuditSpool } from './audit-event.ts';

const FLUSH_LOCK_MS = 10_000;

export class RedisAuditSpool implements AuditSpool {
  /** `<prefix>audit:flush-lock`, released only by its owner (a flush outliving the lock frees nobody else's). */
  private readonly locks: RedisLockStore;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly owner: string,
  ) {
    this.locks = new RedisLockStore(redis, `${prefix}audit:`);
  }

  private get key(): string {
    return `${this.prefix}audit:spool`;
  }

  async push(event: AuditEvent): Promise<void> {
    await this.redis.rpush(this.key, JSON.stringify(event));
  }

  async drain(max: number, fn: (events: AuditEvent[]) => Promise<void>): Promise<number> {
    // One flusher at a time, so a trim never drops events another instance has not written yet.
    if (!(await this.locks.acquire('flush-lock', this.owner, FLUSH_LOCK_MS))) return 0;
    try {
      const raw = await this.redis.lrange(this.key, 0, max - 1);
      if (raw.length === 0) return 0;
      await fn(raw.map((r) => JSON.parse(r) as AuditEvent));
      await this.redis.ltrim(this.key, raw.length, -1);
      return raw.length;
    } finally {
      await this.locks.release('flush-lock', this.owner);
    }
  }

  async size(): Promise<number> {
    return this.redis.llen(this.key);
  }
}
