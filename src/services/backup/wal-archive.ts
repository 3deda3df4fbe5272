import { parseLsn } from '../database/lsn.ts';
import { withProbeConnection } from '../../adapters/pg-connection.ts';

/** What the active primary says about its WAL and archiving (pg_stat_archiver). */
export interface ArchiverStatus {
  checkedAt: Date;
  inRecovery: boolean;
  currentLsn: string | null;
  /** The next transaction id to be assigned: it moves only when something writes. */
  nextXid: string | null;
  walSegmentBytes: number;
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedAt: Date | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedAt: Date | null;
  archiveMode: string;
  /** pg_postmaster_start_time(): a change means the server restarted (or was restored) between samples. */
  postmasterStartedAt?: Date | null;
  /**
   * Segments waiting to be archived (`.ready` files, pg_ls_archive_statusdir()); null when they
   * cannot be read (the role lacks pg_monitor, or a standby) or were not read.
   */
  ready?: { count: number; oldestWal: string | null; oldestAt: Date | null } | null;
}

export async function readArchiverStatus(connectionString: string, timeoutMs: number): Promise<ArchiverStatus> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await withProbeConnection({ connectionString, timeoutMs, signal: controller.signal }, async (client) => {
      const { rows } = await client.query(`SELECT pg_is_in_recovery() AS in_recovery,
          CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
          CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_snapshot_xmax(pg_current_snapshot())::text END AS next_xid,
          current_setting('wal_segment_size') AS seg, pg_postmaster_start_time() AS started, current_setting('archive_mode') AS archive_mode,
          a.archived_count, a.last_archived_wal, a.last_archived_time, a.failed_count, a.last_failed_wal, a.last_failed_time
        FROM pg_stat_archiver a`);
      const r = rows[0];
      return {
        checkedAt: new Date(),
        inRecovery: r.in_recovery,
        currentLsn: r.current_lsn,
        nextXid: r.next_xid,
        walSegmentBytes: parseSize(r.seg),
        archivedCount: Number(r.archived_count),
        lastArchivedWal: r.last_archived_wal,
        lastArchivedAt: r.last_archived_time,
        failedCount: Number(r.failed_count),
        lastFailedWal: r.last_failed_wal,
        lastFailedAt: r.last_failed_time,
        archiveMode: r.archive_mode,
        postmasterStartedAt: r.started ?? null,
        ready: r.in_recovery ? null : await readReady(client),
      };
    });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The `.ready` files of pg_wal/archive_status (PostgreSQL 12+): what waits to be archived. Needs
 * pg_monitor (or superuser); without it the answer is null (unknown), never an error, so the rest of
 * the archiver status is still served.
 */
async function readReady(client: {
  query: (text: string) => Promise<{ rows: Record<string, unknown>[] }>;
}): Promise<ArchiverStatus['ready']> {
  const { rows } = await client.query(
    `SELECT coalesce(has_function_privilege(to_regprocedure('pg_catalog.pg_ls_archive_statusdir()'), 'EXECUTE'), false) AS allowed`,
  );
  if (rows[0]?.allowed !== true) return null;
  const ready = await client.query(`SELECT count(*)::int AS n, min(name) AS oldest, min(modification) AS oldest_at
      FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'`);
  const r = ready.rows[0]!;
  return {
    count: Number(r.n),
    oldestWal: typeof r.oldest === 'string' ? r.oldest.replace(/\.ready$/, '') : null,
    oldestAt: (r.oldest_at as Date | null) ?? null,
  };
}

function parseSize(value: string): number {
  const m = /^(\d+)\s*(kB|MB|GB)?$/.exec(value.trim());
  if (!m) return 16 * 1024 * 1024;
  const unit = m[2] === 'GB' ? 1024 ** 3 : m[2] === 'MB' ? 1024 ** 2 : m[2] === 'kB' ? 1024 : 1;
  return Number(m[1]) * unit;
}

/**
 * The WAL position up to which everything is archived: the end of the segment named by
 * last_archived_wal (a `.backup` file names a segment archived before it). Timeline history and
 * `.partial` files say nothing about the current timeline's segments: undefined.
 */
export function archivedEndLsn(walName: string | null, segmentBytes: number): bigint | undefined {
  if (!walName) return undefined;
  if (!/^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?$/.test(walName)) return undefined;
  return (segmentNumber(walName, segmentBytes) + 1n) * BigInt(segmentBytes);
}

/** A WAL segment's number from 0/0 (its log file and segment parts), for segments of `segmentBytes`. */
export function segmentNumber(name: string, segmentBytes: number): bigint {
  return BigInt(`0x${name.slice(8, 16)}`) * (0x1_0000_0000n / BigInt(segmentBytes)) + BigInt(`0x${name.slice(16, 24)}`);
}

/**
 * RPO exposure: how long ago the oldest committed write that is not yet in the WAL archive
 * happened, i.e. how much would be lost if every server died now; 0 when all is archived.
 *
 * Samples (time, insert LSN, next xid) are kept; a write happened between two samples when the
 * next xid moved. The oldest interval with a write whose WAL ends beyond the archived end is the
 * exposure, counted conservatively from the start of that interval. While archiving is failing the
 * exposure is at least the time since the last successful archive. A tracker that just started
 * knows nothing of writes before its first sample: it counts from the first write it sees.
 *
 * Interrupted samples (a read failed: `interrupt()`; or the server restarted:
 * pg_postmaster_start_time() changed): a write seen across the gap is counted from the first
 * sample after the gap, not from the last one before it (the server was down or unreadable for
 * most of that time: counting from before would report the outage itself as exposure, 83 s right
 * after a restart). A server whose WAL position went back (restored to an earlier point: a new
 * history) starts afresh, archived end included: nothing before the restore is its exposure.
 */
export class RpoTracker {
  private samples: { at: number; lsn: bigint; xid: bigint; afterGap?: boolean }[] = [];
  private archivedEnd: bigint | undefined;
  private gap = false;
  private startedAt: number | undefined;

  /** A read failed: the next sample follows a gap. */
  interrupt(): void {
    this.gap = true;
  }

  observe(status: ArchiverStatus): number {
    const now = status.checkedAt.getTime();
    if (status.inRecovery || status.currentLsn === null || status.nextXid === null) {
      this.samples = [];
      this.gap = false;
      return 0;
    }
    const started = status.postmasterStartedAt ? new Date(status.postmasterStartedAt).getTime() : undefined;
    if (started !== undefined && this.startedAt !== undefined && started !== this.startedAt) this.gap = true;
    if (started !== undefined) this.startedAt = started;
    const lsn = parseLsn(status.currentLsn);
    const xid = BigInt(status.nextXid);
    const end = archivedEndLsn(status.lastArchivedWal, status.walSegmentBytes);
    const last = this.samples.at(-1);
    if (last && lsn < last.lsn) {
      // Restored to an earlier point: another history; the old samples and archived end say nothing.
      this.samples = [];
      this.archivedEnd = undefined;
      this.gap = false;
    }
    if (end !== undefined) this.archivedEnd = end;
    const archivedEnd = this.archivedEnd ?? 0n;
    this.samples.push({ at: now, lsn, xid, ...(this.gap && this.samples.length > 0 ? { afterGap: true } : {}) });
    this.gap = false;
    // Keep only what can still matter: from the last sample whose WAL is all archived.
    let firstNeeded = 0;
    for (let i = this.samples.length - 1; i >= 0; i -= 1) {
      if (this.samples[i]!.lsn <= archivedEnd) {
        firstNeeded = i;
        break;
      }
    }
    this.samples = this.samples.slice(firstNeeded);
    // Bounded while nothing archives: the oldest samples decide the exposure, keep those.
    if (this.samples.length > 5000) this.samples.splice(1000, this.samples.length - 4000);
    let exposure = 0;
    for (let i = 1; i < this.samples.length; i += 1) {
      const prev = this.samples[i - 1]!;
      const cur = this.samples[i]!;
      if (cur.xid !== prev.xid && cur.lsn > archivedEnd) {
        exposure = (now - (cur.afterGap ? cur.at : prev.at)) / 1000;
        break;
      }
    }
    const failing = status.lastFailedAt && (!status.lastArchivedAt || status.lastFailedAt > status.lastArchivedAt) && lsn > archivedEnd;
    if (failing && status.lastArchivedAt) exposure = Math.max(exposure, (now - status.lastArchivedAt.getTime()) / 1000);
    return Math.max(0, exposure);
  }
}
