import type { MediaBackendName } from '../../domain.ts';
import type { Logger } from '../../logger.ts';
import { versionObjectName } from './media-repository.ts';
import type { MediaVersionRepository, OutboxTask } from './media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';
import { copyVersion } from './version-copier.ts';

const BATCH = 16;
const CONCURRENCY = 4;
const LEASE_MS = 60_000;
const MAX_DELAY_MS = 30_000;

/**
 * Continuous backup (MEDIA_CONTINUOUS_BACKUP=true), driven by the outbox in PostgreSQL: every
 * committed write left a row in the same transaction. A task is leased, the version copied, and
 * only then the row deleted; an instance that crashes mid-copy loses nothing (the lease expires
 * and any instance copies it again). The backlog and the RPO exposure are read from the outbox.
 */
export class BackupReplicator {
  private timer?: NodeJS.Timeout;
  private running?: Promise<number>;
  private again = false;

  constructor(
    private readonly deps: {
      versions: MediaVersionRepository;
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      backendDown?: (backend: MediaBackendName) => boolean;
      logger: Logger;
      intervalMs: number;
      onStats?: (stats: { backlog: number; oldestAgeSeconds: number }) => void;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Wakes the replicator after a commit, so the RPO is the copy time, not the poll interval. */
  kick(): void {
    if (this.running) this.again = true;
    else void this.tick();
  }

  private async tick(): Promise<void> {
    await this.drain().catch((err: unknown) => this.deps.logger.warn({ err: String(err) }, 'continuous backup could not read its outbox'));
    const stats = await this.deps.versions.outboxStats().catch(() => undefined);
    if (stats) this.deps.onStats?.(stats);
  }

  /** Copies every due task; returns how many versions were copied. */
  drain(): Promise<number> {
    this.running ??= (async () => {
      let copied = 0;
      try {
        do {
          this.again = false;
          for (;;) {
            const tasks = await this.deps.versions.claimOutbox(BATCH, LEASE_MS);
            if (tasks.length === 0) break;
            const queue = [...tasks];
            await Promise.all(
              Array.from({ length: CONCURRENCY }, async () => {
                for (let t = queue.shift(); t; t = queue.shift()) if (await this.copy(t)) copied += 1;
              }),
            );
          }
        } while (this.again);
        return copied;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async copy(task: OutboxTask): Promise<boolean> {
    const target = this.deps.stores.get(task.target);
    if (!target) return this.settle(task, () => this.deps.versions.dropOutbox(task.taskId));
    if (task.replaced || task.backends.includes(task.target)) {
      // A replaced version is not worth copying (the garbage collector takes it); a present one is done.
      return this.settle(task, async () => {
        if (task.backends.includes(task.target)) await this.deps.versions.completeCopy(task.id, task.target);
        else await this.deps.versions.dropOutbox(task.taskId);
      });
    }
    const source = task.backends.map((b) => this.deps.stores.get(b)).find((s) => s && !this.deps.backendDown?.(s.backend));
    try {
      if (!source) throw new Error(`no reachable backend holds version ${task.id}`);
      await copyVersion(task, source, target);
      if (!(await this.deps.versions.completeCopy(task.id, task.target))) {
        // Collected while we copied: take the copy back rather than leave an orphan.
        await target.remove(versionObjectName(task.id)).catch(() => undefined);
      }
      return true;
    } catch (err) {
      const delay = Math.min(MAX_DELAY_MS, 250 * 2 ** Math.min(task.attempts, 10));
      const message = err instanceof Error ? err.message : String(err);
      const log = task.attempts >= 10 ? this.deps.logger.error.bind(this.deps.logger) : this.deps.logger.warn.bind(this.deps.logger);
      log(
        { key: task.key, version: task.id, target: task.target, attempts: task.attempts, err: message },
        'continuous backup copy failed; retrying',
      );
      await this.deps.versions.retryOutbox(task.taskId, message, delay).catch(() => undefined);
      return false;
    }
  }

  private async settle(task: OutboxTask, fn: () => Promise<unknown>): Promise<boolean> {
    await fn().catch((err: unknown) =>
      this.deps.logger.warn({ version: task.id, err: String(err) }, 'outbox row not settled; it will be retried'),
    );
    return false;
  }
}
