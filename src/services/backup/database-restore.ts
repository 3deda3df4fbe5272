import { z } from 'zod';
import type { BackupInfo, BackupTool, StanzaInfo } from './pgbackrest.ts';
import { describeGap, lsnValue, type WalScan } from './wal-scan.ts';
import { errorMessage } from '../../lib/error-message.ts';

/** The admin API as the restore script uses it (read-only mode, verification). */
export interface RestoreApi {
  /** Resolves only when the API answered that read-only mode is now as asked. */
  setReadOnly(enabled: boolean, reason: string): Promise<void>;
  /** Throws when no verification report (the verify route's JSON) could be had. */
  verifyDatabase(): Promise<{ ok: boolean; report: VerifyReport }>;
}

/** POST /admin/verify/database's answer, as far as the restore relies on it. */
export const verifyReport = z.looseObject({
  status: z.enum(['pass', 'degraded', 'fail']),
  checks: z.array(z.looseObject({ name: z.string(), status: z.enum(['pass', 'fail', 'skip']), detail: z.string().optional() })).min(1),
});
export type VerifyReport = z.infer<typeof verifyReport>;

/** The checks that prove the restored primary itself; the replica's state is judged apart. */
export const PRIMARY_CHECKS = ['connect', 'canary_write_read_delete', 'migrations_up_to_date'] as const;

/** Every primary check passed (a skipped canary means the node is still a standby). */
export function primaryVerified(report: VerifyReport): { ok: boolean; failed: string[] } {
  const failed = PRIMARY_CHECKS.filter((name) => report.checks.find((c) => c.name === name)?.status !== 'pass').map((name) => {
    const check = report.checks.find((c) => c.name === name);
    return `${name}: ${check ? `${check.status}${check.detail ? ` (${check.detail})` : ''}` : 'missing'}`;
  });
  return { ok: failed.length === 0, failed };
}

/** What the verification says about the replica: none configured, following the writer, or not. */
export function replicaOf(report: VerifyReport): { configured: false } | { configured: true; follows: boolean; why: string } {
  const r = replicaFacts.safeParse(report.replication);
  if (!r.success) return { configured: false };
  return { configured: true, follows: r.data.standbyFollows, why: r.data.why ?? r.data.state };
}
const replicaFacts = z.looseObject({ state: z.string(), standbyFollows: z.boolean(), why: z.string().nullable() });

/** PUT /admin/read-only's answer: the mode now in force. */
export const readOnlyAnswer = z.looseObject({ readOnly: z.looseObject({ enabled: z.boolean() }) });

/** A short, printable picture of an answer that was not what was expected. */
export function describeAnswer(status: number, text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return `HTTP ${status} ${flat.length > 200 ? `${flat.slice(0, 200)}…` : flat || '(empty body)'}`;
}

/** The PostgreSQL server being restored, on this host. */
export interface RestoreServer {
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Resolves when the server answers and is out of recovery (promoted), within the bound. */
  waitPromoted(timeoutMs: number): Promise<void>;
}

export interface RestoreRequest {
  backup: string;
  targetTime?: string;
  targetName?: string;
}

export interface RestorePlan {
  backup: Pick<BackupInfo, 'label' | 'type' | 'startedAt' | 'stoppedAt' | 'sizeBytes' | 'repositorySizeBytes'>;
  target: { type: 'end_of_archive' } | { type: 'time'; value: string } | { type: 'name'; value: string };
  /** Where the backup ended (recovery must replay past it before any target counts). */
  lsnStop?: string | null;
  wal: { from: string | null; to: string | null };
  steps: string[];
  /** The timeline recovery follows (recovery_target_timeline); absent: PostgreSQL's 'latest'. */
  timeline?: number;
}

/** A restore that cannot go ahead; the CLI exits 1 with its message. */
export class RestorePlanError extends Error {}

/** Which backup and WAL a restore would use, or why it cannot (the dry run's answer). */
export function planRestore(info: StanzaInfo, request: RestoreRequest): RestorePlan {
  if (request.targetTime && request.targetName) throw new RestorePlanError('give --target-time or --target-name, not both');
  const good = info.backups.filter((b) => !b.error);
  let backup: BackupInfo | undefined;
  if (request.backup === 'latest') {
    if (request.targetTime) {
      const target = Date.parse(request.targetTime);
      if (Number.isNaN(target)) throw new RestorePlanError(`--target-time ${request.targetTime} is not a time`);
      backup = good.filter((b) => Date.parse(b.stoppedAt) <= target).at(-1);
      if (!backup)
        throw new RestorePlanError(
          `no backup ended before ${request.targetTime}; the oldest ended ${good[0]?.stoppedAt ?? 'never (no backup)'}`,
        );
    } else {
      backup = good.at(-1);
      if (!backup) throw new RestorePlanError('the repository holds no successful backup');
    }
  } else {
    backup = info.backups.find((b) => b.label === request.backup);
    if (!backup)
      throw new RestorePlanError(
        `backup ${request.backup} is not in the repository (have: ${info.backups.map((b) => b.label).join(', ') || 'none'})`,
      );
    if (backup.error) throw new RestorePlanError(`backup ${request.backup} is marked as failed`);
    if (request.targetTime && Date.parse(backup.stoppedAt) > Date.parse(request.targetTime))
      throw new RestorePlanError(`backup ${backup.label} ended at ${backup.stoppedAt}, after the target ${request.targetTime}`);
  }
  const target: RestorePlan['target'] = request.targetTime
    ? { type: 'time', value: new Date(request.targetTime).toISOString() }
    : request.targetName
      ? { type: 'name', value: request.targetName }
      : { type: 'end_of_archive' };
  return {
    backup: {
      label: backup.label,
      type: backup.type,
      startedAt: backup.startedAt,
      stoppedAt: backup.stoppedAt,
      sizeBytes: backup.sizeBytes,
      repositorySizeBytes: backup.repositorySizeBytes,
    },
    target,
    lsnStop: backup.lsn.stop,
    wal: { from: backup.wal.start, to: info.archive.max },
    steps: [
      'read-only on (API)',
      'stop PostgreSQL',
      `pgbackrest restore --delta --set=${backup.label}${target.type === 'end_of_archive' ? '' : ` --type=${target.type} --target=${target.value}`}`,
      'start PostgreSQL',
      'wait for promotion',
      'verify (API)',
    ],
  };
}

/**
 * Whether recovery can reach the plan's target in the archived WAL (`scan` read from the backup's
 * first WAL on): a restore point of that name written after the backup ended, or a commit at or
 * after the target time. Throws a RestorePlanError naming what the archive holds otherwise.
 */
export function checkTarget(plan: RestorePlan, scan: WalScan): string {
  try {
    return checkTargetIn(plan, scan);
  } catch (err) {
    // A target behind a hole in the archive: say so, it is why recovery cannot reach it.
    if (err instanceof RestorePlanError && scan.gap) throw new RestorePlanError(`${err.message}; ${describeGap(scan.gap)}`);
    throw err;
  }
}

function checkTargetIn(plan: RestorePlan, scan: WalScan): string {
  const backupLsnStop = plan.lsnStop ?? null;
  if (plan.target.type === 'end_of_archive') return 'the end of the archive';
  if (plan.target.type === 'name') {
    const name = plan.target.value;
    const after = scan.restorePoints.filter((p) => !backupLsnStop || lsnValue(p.lsn) >= lsnValue(backupLsnStop));
    const found = after.find((p) => p.name === name);
    if (found) return `restore point ${name} at ${found.lsn} is in the archived WAL`;
    const before = scan.restorePoints.some((p) => p.name === name);
    const known = after.map((p) => p.name).slice(-10);
    throw new RestorePlanError(
      before
        ? `restore point ${name} was written before backup ${plan.backup.label} ended: recovery cannot stop there; choose an older backup (--from-backup <label>)`
        : `restore point ${name} is not in the archived WAL after backup ${plan.backup.label} (${scan.segments} segment(s) read; newest names: ${known.join(', ') || 'none'})`,
    );
  }
  const target = plan.target.value;
  if (Date.parse(target) > Date.now()) throw new RestorePlanError(`--target-time ${target} is in the future`);
  if (!scan.lastCommitAt || Date.parse(scan.lastCommitAt) < Date.parse(target))
    throw new RestorePlanError(
      `--target-time ${target} is after the newest commit in the archived WAL (${scan.lastCommitAt ?? 'none after the backup'}): recovery would end before reaching it; the usable range is ${plan.backup.stoppedAt} to ${scan.lastCommitAt ?? plan.backup.stoppedAt}`,
    );
  return `the archived WAL holds commits up to ${scan.lastCommitAt}`;
}

export interface StepTiming {
  step: string;
  ms: number;
  /** Set when the step threw (the restore stops there): its message. */
  error?: string;
}

/**
 * The destructive restore, step by step, each timed and reported as it finishes. Read-only mode
 * stays on at the end: the operator reviews the verification (and, after a point-in-time restore,
 * the media uploaded after the target) before writes resume.
 */
export async function runRestore(
  deps: {
    tool: BackupTool;
    api: RestoreApi;
    server: RestoreServer;
    pgData: string;
    onStep: (t: StepTiming) => void;
    promoteTimeoutMs: number;
  },
  plan: RestorePlan,
): Promise<{ steps: StepTiming[]; verification: VerifyReport; ok: boolean }> {
  const steps: StepTiming[] = [];
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    let value: T;
    try {
      value = await fn();
    } catch (err) {
      deps.onStep({ step: name, ms: Math.round(performance.now() - started), error: errorMessage(err) });
      throw err;
    }
    const timing = { step: name, ms: Math.round(performance.now() - started) };
    steps.push(timing);
    deps.onStep(timing);
    return value;
  };
  await step('read-only on', () =>
    deps.api.setReadOnly(
      true,
      `restore-database: ${plan.backup.label} to ${plan.target.type === 'end_of_archive' ? 'the end of the archive' : plan.target.value}`,
    ),
  );
  await step('stop PostgreSQL', () => deps.server.stop());
  await step('pgbackrest restore', () =>
    deps.tool.restore(
      {
        pgPath: deps.pgData,
        set: plan.backup.label,
        delta: true,
        target: plan.target.type === 'end_of_archive' ? undefined : { type: plan.target.type, value: plan.target.value },
        targetAction: 'promote',
        ...(plan.timeline !== undefined ? { targetTimeline: plan.timeline } : {}),
      },
      6 * 3600_000,
    ),
  );
  await step('start PostgreSQL', () => deps.server.start());
  await step('wait for promotion', () => deps.server.waitPromoted(deps.promoteTimeoutMs));
  const verification = await step('verify', () => deps.api.verifyDatabase());
  return { steps, verification: verification.report, ok: verification.ok };
}
