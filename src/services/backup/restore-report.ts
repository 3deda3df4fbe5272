// The destructive restore (scripts/dr/restore-database.sh) runs on the database host, outside the
// API: it reports its start, each step and its outcome to POST /admin/database/restores, and each
// report becomes an audited action, so it joins the timeline of any incident open at the time.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { AuditInput } from '../audit/audit-log.ts';

/** The steps of runRestore, in order (database-restore.ts). */
export const RESTORE_STEPS = [
  'read-only on',
  'stop PostgreSQL',
  'pgbackrest restore',
  'start PostgreSQL',
  'wait for promotion',
  'verify',
] as const;

/** How far a reported time may lie ahead of this server's clock (clock skew), and how far back (a report sent days later). */
export const REPORT_MAX_AHEAD_MS = 5 * 60_000;
export const REPORT_MAX_AGE_MS = 30 * 86_400_000;

const label = z.string().regex(/^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$/, { error: 'must be a pgBackRest backup label' });
const ms = z
  .number()
  .int()
  .min(0)
  .max(7 * 86_400_000);

export const restoreReportBody = z.strictObject({
  /** One restore run, chosen by the tool (a UUID); with seq it names the report, so a resent report is recorded once. */
  restoreId: z.uuid({ error: 'must be a UUID' }),
  seq: z.number().int().min(0).max(100),
  event: z.enum(['started', 'step', 'finished'], { error: 'must be "started", "step" or "finished"' }),
  /** When it happened, on the database host's clock (the step's or the restore's end). */
  at: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 time with a zone' }),
  result: z.enum(['success', 'failed'], { error: 'must be "success" or "failed"' }),
  durationMs: ms.optional(),
  step: z.enum(RESTORE_STEPS, { error: `must be one of: ${RESTORE_STEPS.join(', ')}` }).optional(),
  plan: z
    .strictObject({
      backup: label,
      target: z.discriminatedUnion('type', [
        z.strictObject({ type: z.literal('end_of_archive') }),
        z.strictObject({ type: z.enum(['time', 'name']), value: z.string().min(1).max(64) }),
      ]),
    })
    .optional(),
  steps: z
    .array(z.strictObject({ step: z.enum(RESTORE_STEPS), ms }))
    .max(RESTORE_STEPS.length)
    .optional(),
  error: z.string().max(500).optional(),
  /** The tool could not reach the API when this happened and sends it now. */
  late: z.boolean().optional(),
});

export type RestoreReport = z.output<typeof restoreReportBody>;

/** Why a well-formed report is still refused (400), or undefined. */
export function reportProblem(report: RestoreReport, now = Date.now()): string | undefined {
  const at = Date.parse(report.at);
  if (at > now + REPORT_MAX_AHEAD_MS) return 'at lies in the future (check the database host clock)';
  if (at < now - REPORT_MAX_AGE_MS) return 'at is older than 30 days';
  if (report.event === 'step' && !report.step) return 'a step report names its step';
  if (report.event !== 'step' && report.step) return 'only a step report names a step';
  if (report.event === 'started' && !report.plan) return 'a started report carries the plan';
  if (report.event !== 'started' && report.durationMs === undefined) return 'step and finished reports carry durationMs';
  return undefined;
}

export const RESTORE_ACTION = { started: 'database.restore.start', step: 'database.restore.step', finished: 'database.restore' } as const;

/** A stable audit event id (UUID-shaped) for one report of one restore. */
export function reportEventId(report: Pick<RestoreReport, 'restoreId' | 'seq'>): string {
  const h = createHash('sha256').update(`database.restore:${report.restoreId}:${report.seq}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The audit event a report becomes (actor and role from the token that sent it). */
export function reportAuditInput(report: RestoreReport, actor: { name: string; role: string }, requestId: string | null): AuditInput {
  const detail: Record<string, unknown> = { restoreId: report.restoreId, seq: report.seq };
  if (report.step) detail.step = report.step;
  if (report.plan) detail.plan = report.plan;
  if (report.steps) detail.steps = report.steps;
  if (report.error) detail.error = report.error;
  if (report.late) detail.reportedLate = true;
  return {
    actor: actor.name,
    role: actor.role,
    action: RESTORE_ACTION[report.event],
    result: report.result,
    before: null,
    after: null,
    detail,
    requestId,
    durationMs: report.durationMs ?? null,
  };
}
