import { segmentNumber, type ArchiverStatus } from './wal-archive.ts';

/**
 * Why archiving is failing. `archive_hole` is found by the inventory, not here: the newest backup
 * recovery can start from stops at a hole in the archived WAL (segments the repository lacks between
 * ones it holds), so writes archived after the hole cannot be restored.
 */
export type ArchiveFailureCode = 'archive_command_failed' | 'archive_missing_in_repository' | 'archive_not_progressing' | 'archive_hole';

/** What the repository holds, as pgBackRest info said when it was read. */
export interface RepositoryArchive {
  /** The newest archived segment (pgBackRest info's archive max). */
  max: string | null;
  /** When pgBackRest info was run: the listing holds everything archived before this. */
  readAt: Date;
}

export interface ArchiveAssessment {
  failing: boolean;
  failure: { code: ArchiveFailureCode; message: string } | null;
  /** The newest segment both PostgreSQL and the repository count as archived: what the RPO counts from. */
  archivedWal: string | null;
  /** Segments newly found failed since the last assessment, by cause (for the failure counter). */
  newFailures: Partial<Record<ArchiveFailureCode, number>>;
  /** While archiving stalls: the oldest waiting segment was completed then; nothing after it is archived. */
  stalledSince: Date | null;
  /** While the repository lacks segments: when PostgreSQL was first seen reporting the oldest of them archived. */
  missingSince: Date | null;
}

/** pgBackRest info may be read just before PostgreSQL reports a segment: so much leeway (clocks included). */
export const REPOSITORY_GRACE_MS = 10_000;

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{16})/;

/** The 24-character segment a WAL file name stands for (a `.backup` file names its segment); undefined for history files. */
export function segmentOf(walName: string | null | undefined): string | undefined {
  if (!walName) return undefined;
  const m = /^([0-9A-F]{24})(\.[0-9A-F]{8}\.backup)?$/.exec(walName);
  return m ? m[1] : undefined;
}

/** Segments from `after` (exclusive) to `upTo` (inclusive) on one timeline; 1 when they cannot be compared. */
function segmentsBetween(after: string | undefined, upTo: string, segmentBytes: number): number {
  const a = after ? SEGMENT.exec(after) : null;
  const b = SEGMENT.exec(upTo);
  if (!a || !b || a[1] !== b[1]) return 1;
  const n = segmentNumber(upTo, segmentBytes) - segmentNumber(after!, segmentBytes);
  return n > 0n ? Number(n) : 0;
}

/**
 * pg_stat_archiver alone is not the truth about archiving: an archive_command that returns 0
 * without storing (`/bin/true`, a wrong stanza, pgBackRest's archive-push-queue-max dropping WAL)
 * counts as archived, and with `archive_command = ''` nothing is archived and nothing fails. This
 * compares PostgreSQL's word with the repository's listing and with the segments waiting to be
 * archived (`.ready` files), and keeps what it needs to count each failed segment once.
 *
 * A segment PostgreSQL reported archived at a time before pgBackRest info was run (less a grace)
 * must be in that listing; its absence is `archive_missing_in_repository`. A `.ready` file older
 * than the stall bound is `archive_not_progressing`. Both are failures like archive_command's own.
 */
export class ArchiveCheck {
  /** PostgreSQL's last archived segment as seen at each sample (bounded). */
  private seen: { at: number; wal: string }[] = [];
  private missingCountedUpTo: string | undefined;
  private staleCounted = 0;

  constructor(private readonly options: { stallMs: number; graceMs?: number }) {}

  assess(status: ArchiverStatus, repository: RepositoryArchive | undefined): ArchiveAssessment {
    const now = status.checkedAt.getTime();
    const graceMs = this.options.graceMs ?? REPOSITORY_GRACE_MS;
    const newFailures: ArchiveAssessment['newFailures'] = {};
    const pgWal = segmentOf(status.lastArchivedWal);
    if (pgWal && this.seen.at(-1)?.wal !== pgWal) this.seen.push({ at: now, wal: pgWal });
    if (this.seen.length > 1000) this.seen.splice(0, this.seen.length - 1000);

    const commandFailing = !!status.lastFailedAt && (!status.lastArchivedAt || status.lastFailedAt > status.lastArchivedAt);
    let failure: ArchiveAssessment['failure'] = commandFailing
      ? { code: 'archive_command_failed', message: `archive_command fails (last failed segment ${status.lastFailedWal ?? 'unknown'})` }
      : null;
    let archivedWal = status.lastArchivedWal;
    let stalledSince: Date | null = null;
    let missingSince: Date | null = null;

    if (!status.inRecovery && status.archiveMode !== 'off') {
      // What PostgreSQL had archived before the repository was listed: the newest such segment.
      if (repository) {
        const cutoff = repository.readAt.getTime() - graceMs;
        let claimed: string | undefined;
        for (const s of this.seen) if (s.at <= cutoff && (!claimed || s.wal > claimed)) claimed = s.wal;
        if (pgWal && status.lastArchivedAt && status.lastArchivedAt.getTime() <= cutoff && (!claimed || pgWal > claimed)) claimed = pgWal;
        const repoMax = segmentOf(repository.max);
        if (claimed && (!repoMax || claimed > repoMax)) {
          const from = this.missingCountedUpTo && (!repoMax || this.missingCountedUpTo > repoMax) ? this.missingCountedUpTo : repoMax;
          const added = from && claimed <= from ? 0 : segmentsBetween(from, claimed, status.walSegmentBytes);
          if (added > 0) newFailures.archive_missing_in_repository = added;
          this.missingCountedUpTo = !this.missingCountedUpTo || claimed > this.missingCountedUpTo ? claimed : this.missingCountedUpTo;
          failure ??= {
            code: 'archive_missing_in_repository',
            message: `PostgreSQL reports ${claimed} archived, but the repository's newest archived segment is ${repoMax ?? 'none'}: archive_command reports success without storing WAL`,
          };
          // Only what the repository holds counts as archived.
          archivedWal = repoMax ?? null;
          // The oldest missing segment was archived (and its writes made) no later than PostgreSQL's
          // last archive, and no later than the first sample that saw one of them reported.
          const first = this.seen.find((x) => !repoMax || x.wal > repoMax);
          const bounds = [first?.at, status.lastArchivedAt?.getTime()].filter((t): t is number => t !== undefined);
          missingSince = bounds.length ? new Date(Math.min(...bounds)) : null;
        }
      }
      const ready = status.ready;
      if (ready && ready.count > 0 && ready.oldestAt && now - ready.oldestAt.getTime() > this.options.stallMs) {
        stalledSince = ready.oldestAt;
        // Each waiting segment counted once while the stall lasts.
        if (ready.count > this.staleCounted) newFailures.archive_not_progressing = ready.count - this.staleCounted;
        this.staleCounted = Math.max(this.staleCounted, ready.count);
        failure ??= {
          code: 'archive_not_progressing',
          message: `${ready.count} WAL segment(s) wait to be archived, the oldest (${ready.oldestWal ?? 'unknown'}) for ${Math.round((now - ready.oldestAt.getTime()) / 1000)} s: archiving is not progressing (is archive_command empty?)`,
        };
      } else if (ready) {
        this.staleCounted = 0;
      }
    }
    // archive_mode off where a repository is configured (listed): nothing waits (no .ready files)
    // and nothing fails, yet nothing is archived.
    if (repository && !status.inRecovery && status.archiveMode === 'off')
      failure ??= {
        code: 'archive_not_progressing',
        message:
          'archive_mode is off on the primary: no WAL is archived, so a restore can reach no further than the last segment archived before',
      };
    return { failing: failure !== null, failure, archivedWal, newFailures, stalledSince, missingSince };
  }
}
