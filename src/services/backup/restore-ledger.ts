// What the API has taken of each restore run, so that its reports can be checked against each
// other: a report resent with other content, a second start, a report after the outcome, times that
// go backwards. Kept in Redis (PostgreSQL is the database being restored: it is down for most of a
// restore), with the audit events in PostgreSQL as the fallback while Redis is down or forgot.
import type { Redis } from 'ioredis';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import { AppError, DependencyUnavailableError } from '../../http/app-error.ts';
import { RESTORE_ACTION, type RestoreReport } from './restore-report.ts';
import { redactSecrets } from '../redact-secrets.ts';
import { withTimeout } from '../../lib/with-timeout.ts';

/** A report as recorded: everything but `late` (a resend says it is late; it is the same report). */
export interface RecordedReport {
  seq: number;
  event: RestoreReport['event'];
  at: string;
  result: RestoreReport['result'];
  durationMs: number | null;
  step: string | null;
  plan: unknown;
  steps: unknown;
  error: string | null;
}

/** How long a restore's reports are kept for these checks (reports older than 30 days are refused anyway). */
const KEEP_SECONDS = 31 * 86_400;

export function recordedReport(report: RestoreReport): RecordedReport {
  return {
    seq: report.seq,
    event: report.event,
    at: new Date(report.at).toISOString(),
    result: report.result,
    durationMs: report.durationMs ?? null,
    step: report.step ?? null,
    plan: report.plan ?? null,
    steps: report.steps ?? null,
    error: report.error === undefined ? null : redactSecrets(report.error),
  };
}

/** JSON with sorted keys: the same report is the same text whatever order its fields came in. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(value);
}

export function sameReport(a: RecordedReport, b: RecordedReport): boolean {
  return canonical(a) === canonical(b);
}

const EVENT_OF_ACTION = Object.fromEntries(Object.entries(RESTORE_ACTION).map(([event, action]) => [action, event])) as Record<
  string,
  RestoreReport['event']
>;

/**
 * Why `report` cannot belong with the reports already recorded for its restore (409), or undefined.
 * One start, with the lowest seq; one outcome, with the highest; times never go back as seq goes up.
 */
export function inconsistency(report: RecordedReport, others: RecordedReport[]): string | undefined {
  const at = Date.parse(report.at);
  for (const o of others) {
    if (o.seq === report.seq) continue;
    if (report.event === 'started' && o.event === 'started') return `restore already started (report ${o.seq})`;
    if (report.event === 'finished' && o.event === 'finished') return `restore already finished (report ${o.seq})`;
    if (report.event === 'started' && o.seq < report.seq) return `a start must come first, but report ${o.seq} is earlier`;
    if (o.event === 'started' && report.seq < o.seq) return `report ${report.seq} comes before the start (report ${o.seq})`;
    if (report.event === 'finished' && o.seq > report.seq) return `the outcome must come last, but report ${o.seq} is later`;
    if (o.event === 'finished' && report.seq > o.seq) return `report ${report.seq} comes after the outcome (report ${o.seq})`;
    const oAt = Date.parse(o.at);
    if (o.seq < report.seq && oAt > at) return `report ${report.seq} is dated before report ${o.seq} (${o.at})`;
    if (o.seq > report.seq && oAt < at) return `report ${report.seq} is dated after report ${o.seq} (${o.at})`;
  }
  return undefined;
}

function fromAudit(e: {
  action: string;
  at: Date;
  result: string;
  durationMs: number | null;
  detail: unknown;
}): RecordedReport | undefined {
  const d = (e.detail ?? {}) as Record<string, unknown>;
  const event = EVENT_OF_ACTION[e.action];
  if (!event || typeof d.seq !== 'number') return undefined;
  return {
    seq: d.seq,
    event,
    at: e.at.toISOString(),
    result: e.result as RecordedReport['result'],
    durationMs: e.durationMs,
    step: typeof d.step === 'string' ? d.step : null,
    plan: d.plan ?? null,
    steps: d.steps ?? null,
    error: typeof d.error === 'string' ? d.error : null,
  };
}

export class RestoreLedger {
  constructor(
    private readonly deps: {
      redis: Redis;
      prefix: string;
      prisma: () => PrismaClient;
      /** Bound on the PostgreSQL read (the database may be the one being restored, and hang). */
      dbTimeoutMs: number;
    },
  ) {}

  private key(restoreId: string): string {
    return `${this.deps.prefix}restore-reports:${restoreId}`;
  }

  private async fromDatabase(restoreId: string): Promise<RecordedReport[]> {
    const read = this.deps.prisma().auditEvent.findMany({
      where: { action: { in: Object.values(RESTORE_ACTION) }, detail: { path: ['restoreId'], equals: restoreId } },
      take: 200,
    });
    const rows = await withTimeout(read, this.deps.dbTimeoutMs, 'timeout');
    return rows.map(fromAudit).filter((r): r is RecordedReport => r !== undefined);
  }

  /** The reports recorded for this restore. 503 when neither Redis nor PostgreSQL can say. */
  async recorded(restoreId: string): Promise<Map<number, RecordedReport>> {
    const out = new Map<number, RecordedReport>();
    let fromRedis = false;
    try {
      const hash = await this.deps.redis.hgetall(this.key(restoreId));
      for (const raw of Object.values(hash)) {
        const r = JSON.parse(raw) as RecordedReport;
        out.set(r.seq, r);
      }
      fromRedis = true;
    } catch {
      // Redis is down: PostgreSQL's audit events must answer.
    }
    // Nothing in Redis: an unknown restore, or a Redis that lost it (restarted without its data).
    if (out.size === 0) {
      try {
        for (const r of await this.fromDatabase(restoreId)) if (!out.has(r.seq)) out.set(r.seq, r);
      } catch (err) {
        if (!fromRedis)
          throw new DependencyUnavailableError(
            'redis',
            'the restore reports cannot be checked (Redis and PostgreSQL are down); resend later',
            err,
          );
      }
    }
    return out;
  }

  /**
   * Takes a restore report: a resend is answered with what was recorded (`replayed`); other content
   * for the same report is refused (the record never changes, 409 report_conflict), and so is a
   * report that contradicts the restore's others (409 report_inconsistent). Otherwise the report is
   * recorded; the caller writes its audit event when it is not a replay.
   */
  async accept(report: RestoreReport): Promise<{ recorded: RecordedReport; replayed: boolean }> {
    const recorded = recordedReport(report);
    const known = await this.recorded(report.restoreId);
    const refuse = (earlier: RecordedReport) =>
      new ReportConflictError(
        'report_conflict',
        `report ${report.seq} of restore ${report.restoreId} was recorded with other content; the record is not changed`,
        { seq: report.seq, recorded: earlier },
      );
    const earlier = known.get(report.seq);
    if (earlier) {
      if (!sameReport(earlier, recorded)) throw refuse(earlier);
      return { recorded: earlier, replayed: true };
    }
    const why = inconsistency(recorded, [...known.values()]);
    if (why)
      throw new ReportConflictError('report_inconsistent', `the report contradicts the restore's earlier reports: ${why}`, {
        seq: report.seq,
      });
    // Another instance may take the same seq at the same moment: the first one recorded wins.
    const claimed = await this.claim(report.restoreId, recorded);
    if (!sameReport(claimed, recorded)) throw refuse(claimed);
    return { recorded, replayed: false };
  }

  /**
   * Records the report unless one with its seq is there already (another instance, at the same
   * moment): returns the one recorded first. Redis down: the audit event is the record.
   */
  async claim(restoreId: string, report: RecordedReport): Promise<RecordedReport> {
    try {
      const key = this.key(restoreId);
      const [[, set], , [, existing]] = (await this.deps.redis
        .multi()
        .hsetnx(key, String(report.seq), JSON.stringify(report))
        .expire(key, KEEP_SECONDS)
        .hget(key, String(report.seq))
        .exec()) as [[Error | null, number], unknown, [Error | null, string | null]];
      if (set === 1 || existing === null) return report;
      return JSON.parse(existing) as RecordedReport;
    } catch {
      return report;
    }
  }
}

/** 409 for a report that contradicts what was recorded. */
export class ReportConflictError extends AppError {
  constructor(code: 'report_conflict' | 'report_inconsistent', message: string, extra: Record<string, unknown> = {}) {
    super(409, code, message, extra);
  }
}
