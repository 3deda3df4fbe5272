import type { Redis } from 'ioredis';
import type { AuditEvent, AuditSpool } from './audit-event.ts';

const FLUSH_LOCK_MS = 10_000;

export class RedisAuditSpool implements AuditSpool {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly owner: string,
  ) {}

  private get key(): string {
    return `${this.prefix}audit:spool`;
  }

  async push(event: AuditEvent): Promise<void> {
    await this.redis.rpush(this.key, JSON.stringify(event));
  }

  async drain(max: number, fn: (events: AuditEvent[]) => Promise<void>): Promise<number> {
    // One flusher at a time, so a trim never drops events another instance has not written yet.
    const lock = `${this.prefix}audit:flush-lock`;
    if ((await this.redis.set(lock, this.owner, 'PX', FLUSH_LOCK_MS, 'NX')) !== 'OK') return 0;
    try {
      const raw = await this.redis.lrange(this.key, 0, max - 1);
      if (raw.length === 0) return 0;
      await fn(raw.map((r) => JSON.parse(r) as AuditEvent));
      await this.redis.ltrim(this.key, raw.length, -1);
      return raw.length;
    } finally {
      await this.redis.del(lock);
    }
  }

  async size(): Promise<number> {
    return this.redis.llen(this.key);
  }
}
