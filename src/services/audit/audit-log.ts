import { randomUUID } from 'node:crypto';
import type { Logger } from '../../logger.ts';
import { redactDeep } from '../redact-secrets.ts';
import type { AuditEvent, AuditSink, AuditSpool } from './audit-event.ts';

export type AuditInput = Omit<AuditEvent, 'id' | 'at' | 'instanceId'>;

/**
 * Records every admin action in PostgreSQL and in the log. While PostgreSQL is down an event waits
 * in the Redis spool (or, with Redis down too, in this process) and is written when it returns:
 * no event is lost short of losing this process and Redis together.
 */
export class AuditLog {
  private readonly local: AuditEvent[] = [];
  private timer?: NodeJS.Timeout;
  private readonly hooks: ((events: AuditEvent[]) => Promise<void>)[] = [];

  constructor(
    private readonly deps: {
      sink: AuditSink;
      spool: AuditSpool;
      logger: Logger;
      instanceId: string;
      flushIntervalMs: number;
      now?: () => number;
      /**
       * True while the sink's database is known not to take writes (the active target is a standby,
       * fenced, or on an older timeline than a recorded promotion): events go to the spool at once,
       * instead of after a failed insert (or onto a node that is to be discarded), and wait there.
       */
      sinkClosed?: () => boolean;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.deps.flushIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * Runs after events are written to the sink (incident timelines). A hook that throws leaves the
   * events spooled, so it runs again when they are written again: hooks must be idempotent.
   */
  onWritten(hook: (events: AuditEvent[]) => Promise<void>): void {
    this.hooks.push(hook);
  }

  private async write(events: AuditEvent[]): Promise<void> {
    await this.deps.sink.write(events);
    for (const hook of this.hooks) await hook(events);
  }

  /**
   * `as` is for an action another process took and reports (the restore tool on the database
   * host): its own time, and an id derived from its report so that a report sent twice is one event.
   */
  async record(input: AuditInput, as: { id?: string; at?: Date } = {}): Promise<AuditEvent> {
    const at = as.at ?? new Date(this.deps.now?.() ?? Date.now());
    // Error texts from tools may carry credentials (a connection string, PGPASSWORD=…): never stored or shown.
    const event: AuditEvent = {
      ...input,
      before: redactDeep(input.before),
      after: redactDeep(input.after),
      detail: redactDeep(input.detail),
      id: as.id ?? randomUUID(),
      at: at.toISOString(),
      instanceId: this.deps.instanceId,
    };
    this.deps.logger.info({ audit: event }, `audit: ${event.action} ${event.result} by ${event.actor}`);
    if (this.deps.sinkClosed?.()) {
      await this.spool(event);
      return event;
    }
    try {
      await this.write([event]);
    } catch {
      await this.spool(event);
    }
    return event;
  }

  private async spool(event: AuditEvent): Promise<void> {
    try {
      await this.deps.spool.push(event);
    } catch {
      this.local.push(event);
    }
  }

  /** Writes waiting events: this process's first, then the shared spool. */
  async flush(): Promise<number> {
    if (this.deps.sinkClosed?.()) return 0;
    let written = 0;
    if (this.local.length > 0) {
      const batch = this.local.splice(0, this.local.length);
      try {
        await this.write(batch);
        written += batch.length;
      } catch {
        for (const event of batch) await this.spool(event);
      }
    }
    try {
      for (;;) {
        const n = await this.deps.spool.drain(100, (events) => this.write(events));
        written += n;
        if (n < 100) break;
      }
    } catch {
      // The sink or the spool is still down; the next flush tries again.
    }
    if (written > 0) this.deps.logger.info({ written }, 'spooled audit events written');
    return written;
  }

  async pending(): Promise<number> {
    const shared = await this.deps.spool.size().catch(() => 0);
    return shared + this.local.length;
  }

  recent(limit: number): Promise<AuditEvent[]> {
    return this.deps.sink.recent(limit);
  }
}
