export type AuditResult = 'success' | 'refused' | 'failed' | 'dry_run';

export interface AuditEvent {
  id: string;
  at: string;
  actor: string;
  role: string | null;
  action: string;
  result: AuditResult;
  before: unknown;
  after: unknown;
  detail: unknown;
  requestId: string | null;
  instanceId: string;
  /** How long the action took (admin routes measure it), for incident timelines. */
  durationMs?: number | null;
}

/** Durable home of audit events (PostgreSQL); writes are idempotent by event id. */
export interface AuditSink {
  write(events: AuditEvent[]): Promise<void>;
  recent(limit: number): Promise<AuditEvent[]>;
}

/** Where events wait while the sink is down (Redis list, shared by every instance). */
export interface AuditSpool {
  push(event: AuditEvent): Promise<void>;
  /** Hands up to `max` waiting events to `fn`; they are removed only if `fn` succeeds. */
  drain(max: number, fn: (events: AuditEvent[]) => Promise<void>): Promise<number>;
  size(): Promise<number>;
}
