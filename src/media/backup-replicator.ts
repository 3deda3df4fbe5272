import type { Redis } from 'ioredis';
import type { Logger } from '../logger.ts';
import type { ObjectStore } from './object-store.ts';

const MAX_ATTEMPTS = 20;
const BATCH = 10;

interface Task {
  key: string;
  attempts: number;
}

/**
 * Continuous backup (MEDIA_CONTINUOUS_BACKUP=true): every upload to the primary is copied to the
 * backup in the background, so the media RPO is seconds, not the last sync. Tasks wait in a Redis
 * list shared by every instance (in memory while Redis is down) and are retried with back-off; a
 * task that fails MAX_ATTEMPTS times is logged as an error and left to the next sync.
 */
export class BackupReplicator {
  private readonly local: Task[] = [];
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(
    private readonly deps: { redis: Redis; prefix: string; primary: ObjectStore; backup: ObjectStore; logger: Logger; intervalMs: number; onBacklog?: (n: number) => void },
  ) {}

  private get key(): string {
    return `${this.deps.prefix}media:backup-queue`;
  }

  start(): void {
    this.timer = setInterval(() => {
      void this.drain().then(async () => this.deps.onBacklog?.(await this.backlog()));
    }, this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async enqueue(key: string): Promise<void> {
    await this.push({ key, attempts: 0 });
  }

  private async push(task: Task): Promise<void> {
    try {
      await this.deps.redis.rpush(this.key, JSON.stringify(task));
    } catch {
      this.local.push(task);
    }
  }

  async backlog(): Promise<number> {
    const shared = await this.deps.redis.llen(this.key).catch(() => 0);
    return shared + this.local.length;
  }

  /** Copies what is waiting; returns how many objects were copied. */
  async drain(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    let copied = 0;
    try {
      for (;;) {
        const tasks: Task[] = this.local.splice(0, BATCH);
        if (tasks.length === 0) {
          const raw = await this.deps.redis.lpop(this.key, BATCH).catch(() => null);
          for (const r of raw ?? []) tasks.push(JSON.parse(r) as Task);
        }
        if (tasks.length === 0) return copied;
        for (const [i, task] of tasks.entries()) {
          const outcome = await this.copy(task);
          if (outcome === 'copied') copied += 1;
          if (outcome === 'retry') {
            // The backup is failing: put the rest back and try again on the next tick.
            for (const rest of tasks.slice(i + 1)) await this.push(rest);
            return copied;
          }
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async copy(task: Task): Promise<'copied' | 'skipped' | 'retry'> {
    try {
      const stat = await this.deps.primary.stat(task.key);
      if (!stat) return 'skipped'; // deleted meanwhile
      await this.deps.backup.put(task.key, await this.deps.primary.get(task.key), stat.size, stat.contentType ?? 'application/octet-stream');
      return 'copied';
    } catch (err) {
      const attempts = task.attempts + 1;
      if (attempts >= MAX_ATTEMPTS) {
        this.deps.logger.error({ key: task.key, attempts, err: err instanceof Error ? err.message : String(err) }, 'continuous backup gave up on an object; run a media sync');
        return 'skipped';
      }
      // Back off: the task goes to the end of the queue and the drain stops until the next tick.
      await this.push({ key: task.key, attempts });
      return 'retry';
    }
  }
}
