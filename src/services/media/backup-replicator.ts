import { randomUUID } from 'node:crypto';
import type { MediaBackendName } from '../../domain.ts';
import type { Logger } from '../../logger.ts';
import { versionObjectName } from './media-repository.ts';
import type { MediaVersionRepository, OutboxStats, OutboxTask, RetireReason } from './media-version-repository.ts';
import { ObjectMissingError, type ObjectStore } from '../../adapters/object-store.ts';
import { copyVersion, VersionCorruptError } from './version-copier.ts';
import { withTimeout } from '../../lib/with-timeout.ts';
import { errorMessage } from '../../lib/error-message.ts';

const BATCH = 16;
const CONCURRENCY = 4;
/**
 * A claim's lease: short, and renewed every RENEW_MS while its holder copies, so the rows of a
 * holder that crashed (or of a claim whose answer was lost with its connection) come back within
 * seconds instead of waiting out a long lease.
 */
export const OUTBOX_LEASE_MS = 10_000;
const RENEW_MS = 3_000;
/** Retries of a transient failure (a backend unreachable, the database gone) back off to this at most. */
export const OUTBOX_MAX_DELAY_MS = 5_000;
/**
 * A copy that makes no progress to completion within this (plus 1 s per MB) is abandoned and
 * retried: the lease is renewed while a copy runs, so a hung copy must not hold its row forever.
 */
export const OUTBOX_COPY_TIMEOUT_MS = 60_000;
/** Definitive failures (content missing or corrupt on every backend that should hold it) before a row is retired. */
export const OUTBOX_RETIRE_AFTER = 3;

/**
 * Continuous backup (MEDIA_CONTINUOUS_BACKUP=true), driven by the outbox in PostgreSQL: every
 * committed write left a row in the same transaction. A task is leased, the version copied, and
 * only then the row deleted; an instance that crashes mid-copy loses nothing (the lease expires
 * and any instance copies it again). Every row ends applied or retired with a recorded reason:
 * a transient failure is retried with a bounded back-off, a row whose target or every holder the
 * probes report down is not tried (and blocks nothing), and a row that can never succeed (its
 * content missing or corrupt on every backend that should hold it) is retired after a few tries,
 * loudly. The backlog, the stuck rows, the retired ones and the RPO exposure come from the outbox.
 */
export class BackupReplicator {
  private timer?: NodeJS.Timeout;
  private running?: Promise<number>;
  private again = false;
  private last?: OutboxStats;

  constructor(
    private readonly deps: {
      versions: MediaVersionRepository;
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      backendDown?: (backend: MediaBackendName) => boolean;
      logger: Logger;
      intervalMs: number;
      onStats?: (stats: OutboxStats) => void;
      /** Overrides OUTBOX_LEASE_MS (tests). */
      leaseMs?: number;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The outbox as last read (undefined before the first read). */
  stats(): OutboxStats | undefined {
    return this.last;
  }

  /** Wakes the replicator after a commit, so the RPO is the copy time, not the poll interval. */
  kick(): void {
    if (this.running) this.again = true;
    else void this.tick();
  }

  private async tick(): Promise<void> {
    await this.drain().catch((err: unknown) => this.deps.logger.warn({ err: String(err) }, 'continuous backup could not read its outbox'));
    const stats = await this.deps.versions.outboxStats().catch(() => undefined);
    if (stats) {
      this.last = stats;
      this.deps.onStats?.(stats);
    }
  }

  /** Copies every due task; returns how many versions were copied. */
  drain(): Promise<number> {
    this.running ??= (async () => {
      let copied = 0;
      try {
        do {
          this.again = false;
          for (;;) {
            const down = [...this.deps.stores.keys()].filter((b) => this.deps.backendDown?.(b));
            const token = randomUUID();
            const leaseMs = this.deps.leaseMs ?? OUTBOX_LEASE_MS;
            const tasks = await this.deps.versions.claimOutbox(BATCH, leaseMs, token, down);
            if (tasks.length === 0) break;
            const held = new Set(tasks.map((t) => t.taskId));
            const renew = setInterval(
              () =>
                void this.deps.versions
                  .renewOutbox(token, [...held], leaseMs)
                  .catch((err: unknown) => this.deps.logger.warn({ err: String(err) }, 'continuous backup could not renew its lease')),
              Math.max(50, Math.min(RENEW_MS, leaseMs / 3)),
            );
            renew.unref();
            try {
              const queue = [...tasks];
              await Promise.all(
                Array.from({ length: CONCURRENCY }, async () => {
                  for (let t = queue.shift(); t; t = queue.shift()) {
                    if (await this.copy(t, token)) copied += 1;
                    held.delete(t.taskId);
                  }
                }),
              );
            } finally {
              clearInterval(renew);
            }
          }
        } while (this.again);
        return copied;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async copy(task: OutboxTask, token: string): Promise<boolean> {
    const target = this.deps.stores.get(task.target);
    if (!target) return this.retire(task, token, 'target_not_configured');
    if (task.backends.includes(task.target))
      return this.settle(task, () => this.deps.versions.completeCopy(task.id, task.target)).then(() => false);
    // A replaced version is not worth copying: the garbage collector takes it.
    if (task.replaced) return this.retire(task, token, 'replaced');
    const holders = task.backends.filter((b) => b !== task.target && this.deps.stores.has(b));
    const reachable = holders.filter((b) => !this.deps.backendDown?.(b));
    const definitive: string[] = [];
    try {
      if (reachable.length === 0) throw new Error(`no reachable backend holds version ${task.id}`);
      let done = false;
      for (const b of reachable) {
        try {
          // Left to its own S3 timeouts once given up.
          const ms = OUTBOX_COPY_TIMEOUT_MS + task.size / 1000;
          await withTimeout(
            copyVersion(task, this.deps.stores.get(b)!, target),
            ms,
            `copy from ${b} did not finish within ${Math.round(ms / 1000)} s`,
          );
          done = true;
          break;
        } catch (err) {
          // Missing or corrupt on this holder: another may still have it whole.
          if (err instanceof ObjectMissingError || err instanceof VersionCorruptError) definitive.push(`${b}: ${errorMessage(err)}`);
          else throw err;
        }
      }
      if (!done) throw new Error(definitive.join('; '));
      if (!(await this.deps.versions.completeCopy(task.id, task.target))) {
        // Collected while we copied: take the copy back rather than leave an orphan.
        await target.remove(versionObjectName(task.id)).catch(() => undefined);
      }
      return true;
    } catch (err) {
      const message = errorMessage(err);
      // Definitive only when every backend that should hold the version answered and lacks it whole:
      // versions are immutable, so no retry can bring its content back.
      const hopeless = definitive.length > 0 && definitive.length === holders.length;
      if (hopeless && task.failures + 1 >= OUTBOX_RETIRE_AFTER) return this.retire(task, token, 'content_missing', message);
      const delay = hopeless ? 1000 : Math.min(OUTBOX_MAX_DELAY_MS, 250 * 2 ** Math.min(Math.max(task.attempts - 1, 0), 5));
      const log =
        task.attempts >= 10 || hopeless ? this.deps.logger.error.bind(this.deps.logger) : this.deps.logger.warn.bind(this.deps.logger);
      log(
        {
          key: task.key,
          version: task.id,
          target: task.target,
          attempts: task.attempts,
          failures: task.failures + Number(hopeless),
          err: message,
        },
        'continuous backup copy failed; retrying',
      );
      await this.deps.versions.retryOutbox(task.taskId, token, message, delay, hopeless).catch(() => undefined);
      return false;
    }
  }

  private async retire(task: OutboxTask, token: string, reason: RetireReason, error?: string): Promise<boolean> {
    await this.settle(task, async () => {
      const retired = await this.deps.versions.retireOutbox(task.taskId, token, reason, error);
      if (retired && reason !== 'replaced')
        this.deps.logger.error(
          { key: task.key, version: task.id, target: task.target, attempts: task.attempts, reason, err: error },
          'continuous backup gave up on a version: it is NOT on the target; run a media sync once the cause is fixed',
        );
    });
    return false;
  }

  private async settle(task: OutboxTask, fn: () => Promise<unknown>): Promise<void> {
    await fn().catch((err: unknown) =>
      this.deps.logger.warn({ version: task.id, err: String(err) }, 'outbox row not settled; it will be retried'),
    );
  }
}
