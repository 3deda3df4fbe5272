import { DependencyUnavailableError } from '../../http/app-error.ts';
import { AppError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';
import { BackupToolError, type BackupInfo, type BackupTool, type StanzaInfo } from './pgbackrest.ts';
import { ArchiveCheck, type ArchiveAssessment, type ArchiveFailureCode } from './archive-check.ts';
import { RpoTracker, segmentNumber, type ArchiverStatus } from './wal-archive.ts';
import { backupRecovery, type WalArchiveSource } from './wal-scan.ts';
import { holeOf, recoverable } from './recoverable.ts';

const FAILURE_CODES: ArchiveFailureCode[] = [
  'archive_command_failed',
  'archive_missing_in_repository',
  'archive_not_progressing',
  'archive_hole',
];

/** The archiver status with what the service concluded from it and the repository. */
export type ArchiverReading = ArchiverStatus & { rpoExposureSeconds: number | null; assessment: ArchiveAssessment };

/** pgBackRest is not configured, missing, or its repository cannot be read: 503 with a code. */
export class BackupUnavailableError extends AppError {
  constructor(code: string, message: string, cause?: unknown) {
    super(503, code, message);
    this.cause = cause;
    this.headers['Retry-After'] = '30';
  }
}

export interface InventoryDeps {
  tool: BackupTool | undefined;
  /** The archive's listing and files (pgBackRest repo-ls, archive-get): each backup's `recovery` is read from it. */
  walSource?: WalArchiveSource;
  /** The timeline the active primary is on now: each backup's recovery follows it (see BackupValidator). */
  liveTimeline?: () => Promise<number | undefined>;
  /** Called with every fresh info (a worker publishes it for API instances without pgBackRest). */
  onInfo?: (info: StanzaInfo) => Promise<void>;
  /** pg_stat_archiver of the active primary. */
  archiver: () => Promise<ArchiverStatus>;
  /** The newest passing validation's finish time, if any. */
  lastValidation: () => Promise<Date | undefined>;
  /** The backup job queued or running (its age, for sav3_backup_running_seconds); undefined: unknown. */
  runningBackup?: () => Promise<{ ageSeconds: number } | null | undefined>;
  /** BACKUP_RUNNING_MAX, exported as sav3_backup_running_max_seconds. */
  runningMaxSeconds?: number;
  metrics: Pick<
    Metrics,
    | 'rpoExposure'
    | 'backupLastSuccess'
    | 'walArchiveFailures'
    | 'walArchivingFailing'
    | 'backupMaxAge'
    | 'backupValidationLastSuccess'
    | 'backupValidationMaxAge'
    | 'backupRunning'
    | 'backupRunningMax'
    | 'dependencyUp'
  >;
  logger: Logger;
  timeoutMs: number;
  cacheMs: number;
  intervalMs: number;
  maxAgeSeconds: number;
  validationMaxAgeSeconds: number;
  /** A `.ready` segment older than this: archiving is not progressing (WAL_ARCHIVE_STALL_MS). */
  archiveStallMs?: number;
  /** Leeway between PostgreSQL reporting a segment archived and pgBackRest info listing it. */
  archiveGraceMs?: number;
}

/**
 * The backup inventory (pgBackRest info, cached and bounded) and the live RPO picture (the
 * archiver on the active primary), sampled in the background into the metrics.
 */
export class BackupInventory {
  private cached: { at: number; info: StanzaInfo } | undefined;
  private inflight: Promise<StanzaInfo> | undefined;
  private readonly rpo = new RpoTracker();
  private readonly archiveCheck: ArchiveCheck;
  private failedCountSeen: number | undefined;
  /** The hole the newest recoverable backup's recovery stops at, and when this instance first saw it. */
  private hole: { missing: string; since: Date } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;

  constructor(private readonly deps: InventoryDeps) {
    deps.metrics.backupMaxAge.set(deps.maxAgeSeconds);
    deps.metrics.backupValidationMaxAge.set(deps.validationMaxAgeSeconds);
    if (deps.runningMaxSeconds !== undefined) deps.metrics.backupRunningMax.set(deps.runningMaxSeconds);
    this.archiveCheck = new ArchiveCheck({ stallMs: deps.archiveStallMs ?? 60_000, graceMs: deps.archiveGraceMs });
    for (const reason of FAILURE_CODES) {
      deps.metrics.walArchiveFailures.inc({ reason }, 0);
      deps.metrics.walArchivingFailing.set({ reason }, 0);
    }
  }

  get configured(): boolean {
    return this.deps.tool !== undefined;
  }

  /** pgBackRest info, from a cache younger than cacheMs unless fresh is asked; one run at a time. */
  async info(fresh = false): Promise<StanzaInfo> {
    const tool = this.deps.tool;
    if (!tool) throw new BackupUnavailableError('backups_not_configured', 'backups are not configured (PGBACKREST_STANZA is not set)');
    if (!fresh && this.cached && Date.now() - this.cached.at < this.deps.cacheMs) return this.cached.info;
    this.inflight ??= tool
      .info(this.deps.timeoutMs)
      .then((info) => this.withRecovery(info))
      .then((info) => {
        this.cached = { at: Date.now(), info };
        this.deps.metrics.dependencyUp.set({ dependency: 'pgbackrest', target: 'repository' }, 1);
        this.recordBackups(info);
        void this.deps.onInfo?.(info).catch(() => undefined);
        return info;
      })
      .catch((err: unknown) => {
        this.deps.metrics.dependencyUp.set({ dependency: 'pgbackrest', target: 'repository' }, 0);
        throw toUnavailable(err);
      })
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }

  /**
   * Each backup's recovery against the archive (a hole, a branch a point-in-time restore
   * abandoned): listed once per read; unknown (null) when the archive could not be read.
   */
  private async withRecovery(info: StanzaInfo): Promise<StanzaInfo> {
    const source = this.deps.walSource;
    if (!source || info.backups.length === 0) return info;
    try {
      const timeline = await this.deps.liveTimeline?.().catch(() => undefined);
      const recovery = await backupRecovery(source, info.backups, { timeoutMs: this.deps.timeoutMs, timeline });
      return { ...info, backups: info.backups.map((b) => ({ ...b, recovery: recovery.get(b.label) ?? null })) };
    } catch (err) {
      this.deps.logger.warn({ err }, "the archive could not be read for the backups' recovery");
      return { ...info, backups: info.backups.map((b) => ({ ...b, recovery: null })) };
    }
  }

  invalidate(): void {
    this.cached = undefined;
  }

  /** The newest backup per type that recovery can start from (one on an abandoned branch, or missing its own WAL, does not count). */
  private recordBackups(info: StanzaInfo): void {
    for (const type of ['full', 'diff', 'incr'] as const) {
      const newest = info.backups.filter((b) => b.type === type && recoverable(b)).map((b) => Date.parse(b.stoppedAt) / 1000);
      this.deps.metrics.backupLastSuccess.set({ type }, newest.length ? Math.max(...newest) : 0);
    }
  }

  private archiverInflight: Promise<ArchiverReading> | undefined;

  /** Reads the archiver, updates the RPO exposure and the failure counter; one read at a time. */
  archiver(): Promise<ArchiverReading> {
    this.archiverInflight ??= this.readArchiver().finally(() => {
      this.archiverInflight = undefined;
    });
    return this.archiverInflight;
  }

  private async readArchiver(): Promise<ArchiverReading> {
    let status: ArchiverStatus;
    try {
      status = await this.deps.archiver();
    } catch (err) {
      this.rpo.interrupt();
      throw err;
    }
    // The repository's listing (cached; its read time, not the cache's, bounds what it must hold).
    const info = this.deps.tool ? await this.info().catch(() => undefined) : undefined;
    const readAt = info ? new Date(info.readAt ?? this.cached?.at ?? 0) : undefined;
    const assessment = this.archiveCheck.assess(status, info && readAt ? { max: info.archive.max, readAt } : undefined);
    const hole = info ? this.holeCheck(info, status) : undefined;
    if (hole && !assessment.failure) {
      assessment.failure = { code: 'archive_hole', message: hole.message };
      assessment.failing = true;
    }
    // Only what the repository holds counts as archived for the RPO.
    const observed = this.rpo.observe({ ...status, lastArchivedWal: assessment.archivedWal });
    const since = assessment.failing
      ? [assessment.stalledSince, assessment.missingSince, hole?.since ?? null].filter((d): d is Date => d !== null)
      : [];
    const floor = since.length ? (status.checkedAt.getTime() - Math.min(...since.map((d) => d.getTime()))) / 1000 : 0;
    // The active target is a standby (read-only failover): it cannot say what its primary has not
    // archived, so the exposure is unknown (null) and the gauge keeps its last value.
    const exposure = status.inRecovery ? null : Math.max(observed, floor);
    if (exposure !== null) this.deps.metrics.rpoExposure.set({ component: 'database' }, exposure);
    if (this.failedCountSeen !== undefined && status.failedCount > this.failedCountSeen) {
      this.deps.metrics.walArchiveFailures.inc({ reason: 'archive_command_failed' }, status.failedCount - this.failedCountSeen);
    }
    this.failedCountSeen = status.failedCount;
    for (const [reason, n] of Object.entries(assessment.newFailures)) if (n) this.deps.metrics.walArchiveFailures.inc({ reason }, n);
    for (const reason of FAILURE_CODES) this.deps.metrics.walArchivingFailing.set({ reason }, assessment.failure?.code === reason ? 1 : 0);
    if (assessment.failure && assessment.failure.code !== 'archive_command_failed')
      this.deps.logger.warn({ code: assessment.failure.code }, assessment.failure.message);
    return { ...status, rpoExposureSeconds: exposure, assessment };
  }

  /**
   * A hole in the archived WAL that recovery from the newest backup it can start from stops at:
   * every write archived after it is lost to a restore (the restore script's dry run refuses it),
   * while PostgreSQL, once archive_command works again, reports all well. A hole before the newest
   * backup does not count (that backup does not need it); a new backup clears it. The RPO exposure
   * counts at least from when this instance first saw the hole (the missing WAL was written before:
   * a lower bound; an instance started later counts from its start). Its segments (from the first
   * missing one to the next archived) are counted once as failures.
   */
  private holeCheck(info: StanzaInfo, status: ArchiverStatus): { since: Date; message: string } | undefined {
    const newest = info.backups.filter(recoverable).at(-1);
    const hole = holeOf(newest?.recovery);
    if (!newest || !hole) {
      // Unknown (the archive was not read) keeps what was seen; anything else clears it.
      if (newest?.recovery !== null) this.hole = undefined;
      return this.hole
        ? { since: this.hole.since, message: 'the archived WAL has a hole (the archive could not be read again)' }
        : undefined;
    }
    if (this.hole?.missing !== hole.missing) {
      this.hole = { missing: hole.missing, since: status.checkedAt };
      const gap =
        hole.nextArchived && hole.nextArchived.slice(8) > hole.missing.slice(8)
          ? Number(segmentNumber(hole.nextArchived, status.walSegmentBytes) - segmentNumber(hole.missing, status.walSegmentBytes))
          : 1;
      this.deps.metrics.walArchiveFailures.inc({ reason: 'archive_hole' }, gap);
    }
    return {
      since: this.hole.since,
      message: `the archived WAL has a hole: recovery from the newest backup it can start from (${newest.label}) stops before ${hole.missing}, so the writes archived after it cannot be restored (${newest.recovery!.problem}); take a new backup`,
    };
  }

  /** GET /admin/backups: every backup, the archive range and the archiving status. */
  async inventory() {
    const [info, archiver] = await Promise.all([this.info(), this.archiver().catch((err: unknown) => err as Error)]);
    const archiving =
      archiver instanceof Error
        ? { available: false, error: 'the active database did not answer' }
        : {
            available: true,
            archiveMode: archiver.archiveMode,
            inRecovery: archiver.inRecovery,
            currentLsn: archiver.currentLsn,
            archivedCount: archiver.archivedCount,
            lastArchivedWal: archiver.lastArchivedWal,
            lastArchivedAt: archiver.lastArchivedAt?.toISOString() ?? null,
            failedCount: archiver.failedCount,
            lastFailedWal: archiver.lastFailedWal,
            lastFailedAt: archiver.lastFailedAt?.toISOString() ?? null,
            failing: archiver.assessment.failing,
            failure: archiver.assessment.failure,
            repositoryArchivedWal: info.archive.max,
            ready: archiver.ready
              ? {
                  count: archiver.ready.count,
                  oldestWal: archiver.ready.oldestWal,
                  oldestAt: archiver.ready.oldestAt?.toISOString() ?? null,
                }
              : null,
            rpoExposureSeconds: archiver.rpoExposureSeconds,
          };
    return {
      stanza: info.stanza,
      status: info.status,
      backups: info.backups,
      archive: { min: info.archive.min, max: info.archive.max },
      archiving,
      backupAge: backupAge(info.backups, this.deps.maxAgeSeconds),
      checkedAt: new Date(this.cached?.at ?? Date.now()).toISOString(),
    };
  }

  /**
   * The range a point-in-time target may take: from the end of the oldest good backup (pgBackRest
   * records whole seconds, cut down: rounded up here, a target in that second may precede the real
   * end) to the newest commit surely in the repository's archive (now less the RPO exposure). That
   * bound is an upper one: recovery also needs a commit at or after the target, which only the WAL
   * itself shows (the validation job reads it before it restores). The active database's archiver
   * must answer: without it nothing is known (503).
   */
  async recoverableRange(): Promise<{ from: string | null; to: string | null }> {
    const info = await this.info();
    const good = info.backups.filter((b) => !b.error);
    const from = good.length ? backupEnd(good.map((b) => b.stoppedAt).sort()[0]!) : null;
    const archiver = await this.archiver().catch((err: unknown) => {
      throw new DependencyUnavailableError('database', 'the active database did not answer: the archived range is unknown', err);
    });
    const to =
      archiver.rpoExposureSeconds === null
        ? (archiver.lastArchivedAt?.toISOString() ?? null)
        : new Date(archiver.checkedAt.getTime() - archiver.rpoExposureSeconds * 1000).toISOString();
    return { from, to };
  }

  async sample(): Promise<void> {
    this.sampling ??= (async () => {
      if (this.deps.tool) await this.info(true).catch((err: unknown) => this.deps.logger.warn({ err }, 'backup inventory unavailable'));
      await this.archiver().catch((err: unknown) => this.deps.logger.debug({ err }, 'archiver status unavailable'));
      const last = await this.deps.lastValidation().catch(() => undefined);
      this.deps.metrics.backupValidationLastSuccess.set(last ? last.getTime() / 1000 : 0);
      // Unknown (Redis did not answer) keeps the last value.
      const running = await this.deps.runningBackup?.().catch(() => undefined);
      if (running !== undefined) this.deps.metrics.backupRunning.set(running?.ageSeconds ?? 0);
    })().finally(() => {
      this.sampling = undefined;
    });
    return this.sampling;
  }

  /**
   * Samples every intervalMs. The first sample waits a little: it loads the Prisma client and opens
   * connections, which must not compete with the instance's first health probes at start-up.
   */
  start(firstDelayMs = Math.min(this.deps.intervalMs, 3000)): void {
    const tick = () => {
      void this.sample().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.deps.intervalMs);
      });
    };
    this.timer = setTimeout(tick, firstDelayMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * The newest successful full or differential backup against BACKUP_MAX_AGE: the BackupTooOld
 * alert's rule (time() - newest full|diff stop > sav3_backup_max_age_seconds), for the scripts.
 * Only a backup recovery can start from counts: one on a branch a point-in-time restore abandoned,
 * or whose own WAL the archive lacks, is listed in `unrecoverable` (newer than the one counted).
 */
export function backupAge(
  backups: readonly (Pick<BackupInfo, 'type' | 'stoppedAt' | 'error' | 'label'> & { recovery?: BackupInfo['recovery'] })[],
  maxAgeSeconds: number,
  now = Date.now(),
) {
  const fullOrDiff = backups
    .filter((b) => !b.error && (b.type === 'full' || b.type === 'diff'))
    .sort((a, b) => Date.parse(a.stoppedAt) - Date.parse(b.stoppedAt));
  const newest = fullOrDiff.filter(recoverable).at(-1);
  const unrecoverable = fullOrDiff
    .filter((b) => !recoverable(b) && (!newest || Date.parse(b.stoppedAt) > Date.parse(newest.stoppedAt)))
    .map((b) => ({ label: b.label, problem: b.recovery?.problem ?? null }));
  const ageSeconds = newest ? Math.max(0, Math.round((now - Date.parse(newest.stoppedAt)) / 1000)) : null;
  return {
    maxAgeSeconds,
    newestFullOrDiff: newest ? { label: newest.label, stoppedAt: newest.stoppedAt } : null,
    ageSeconds,
    tooOld: ageSeconds === null || ageSeconds > maxAgeSeconds,
    unrecoverable,
  };
}

/**
 * When a backup really ended, at the latest: pgBackRest's stop time is whole seconds, cut down
 * (17:44:13.5 is listed 17:44:13), so the next second.
 */
export function backupEnd(stoppedAt: string): string {
  return new Date(Math.floor(Date.parse(stoppedAt) / 1000) * 1000 + 1000).toISOString();
}

function toUnavailable(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof BackupToolError) return new BackupUnavailableError(err.code, err.message, err);
  return new DependencyUnavailableError('pgbackrest', 'pgBackRest info could not be read', err);
}
