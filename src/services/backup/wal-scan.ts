// What the WAL archive really holds for a point-in-time restore: the restore points (names) and the
// newest commit time after a backup. PostgreSQL 13+ stops with
// `FATAL: recovery ended before configured recovery target was reached` when a target is not in
// the WAL it replays: the restore script checks the target here before it touches anything.
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, runAs } from './os-command.ts';
import type { BackupRecovery } from './pgbackrest.ts';

/** The archive as the scanner needs it (pgBackRest's repo-ls and archive-get). */
export interface WalArchiveSource {
  /** Every archived WAL segment name (24 hex digits), any timeline, and timeline history file names (`00000002.history`). */
  listSegments(timeoutMs: number): Promise<string[]>;
  /** Copies one archived segment or history file (decompressed) to `dest`. */
  fetchSegment(segment: string, dest: string, timeoutMs: number): Promise<void>;
}

/** A hole in the archived WAL: recovery stops after `lastReachable`; what is archived after it is lost to it. */
export interface ArchiveGap {
  /** The segment recovery needs next and the archive lacks. */
  missing: string;
  lastReachable: string;
  /** The next archived segment of the recovery's history after the hole (null: none). */
  nextArchived: string | null;
  /** Archived segments after the hole, which recovery from this backup can never replay. */
  segmentsBeyond: number;
  /** The hole lies within the backup's own WAL (its start to its stop segment): the backup cannot be restored at all. */
  withinBackup: boolean;
}

export interface WalScan {
  segments: number;
  /** Null when the archive is continuous from the backup's first segment to its newest one. */
  gap: ArchiveGap | null;
  restorePoints: { name: string; lsn: string; at: string | null }[];
  /** The newest commit (or abort) time in the scanned WAL: a time target must not be later. */
  lastCommitAt: string | null;
  /** Why recovery from this backup cannot follow the archive's newest timeline (see Replay); null when it can. */
  notChild: string | null;
}

/** Where recovery starts: a backup's WAL (pgBackRest info's archive start/stop and lsn start). */
export interface ReplayFrom {
  /** The backup's first WAL segment; its timeline is the first 8 hex digits. */
  start: string;
  /** The backup's last WAL segment: every segment up to it is needed for the backup to be consistent. */
  stop?: string | null;
  /** The backup's start LSN: it must lie on the recovery timeline's history. */
  startLsn?: string | null;
}

/** Where recovery from a backup (as pgBackRest info lists it) starts; its first segment must be known. */
export function replayFrom(backup: { wal: { start: string | null; stop: string | null }; lsn: { start: string | null } }): ReplayFrom {
  return { start: backup.wal.start!, stop: backup.wal.stop, startLsn: backup.lsn.start };
}

/** One line of a timeline history file: `timeline` ended at `switchLsn`, where the next one began. */
export interface TimelineFork {
  timeline: number;
  switchLsn: string;
}

/** The timeline recovery follows (the archive's newest, as recovery_target_timeline 'latest' picks it) and its history. */
export interface RecoveryPath {
  timeline: number;
  forks: TimelineFork[];
  segmentBytes: number;
  /** The timeline was given (the live server's: recovery_target_timeline set to it), not PostgreSQL's 'latest'. */
  pinned?: boolean;
}

export interface Replay {
  /** The timeline recovery ends on. */
  timeline: number;
  /** The segments recovery replays, in order, up to the first hole. */
  segments: string[];
  gap: ArchiveGap | null;
  /**
   * Why recovery from this backup cannot follow the archive's newest timeline (the backup lies on a
   * branch that timeline abandoned: PostgreSQL stops with "requested timeline N is not a child of
   * this server's history"); null when it can.
   */
  notChild: string | null;
  /**
   * Segments archived on a timeline of the followed history after the point where that history
   * left it (a branch it abandoned: a point-in-time restore, an abandoned promotion, or the branch
   * that is really the live one when the followed timeline is not). Recovery never replays them.
   */
  abandonedSegments: number;
  /**
   * Timelines newer than the followed one that the archive holds (segments or history files):
   * recovery never replays them. Under 'latest' that means a history file is missing (everything
   * on them would be lost without a word); with the timeline pinned, abandoned promotions, or a
   * server that is not the newest primary.
   */
  newerTimelines: number[];
}

const SEGMENT = /^[0-9A-F]{24}$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;
const MB = 1024 * 1024;

/** `0/3000028` → a comparable bigint. */
export function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

const hex8 = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');

/** A timeline history file's lines (`<parent timeline> <switch LSN> <reason>`), oldest first. */
export function parseHistory(text: string): TimelineFork[] {
  const forks: TimelineFork[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (m) forks.push({ timeline: Number(m[1]), switchLsn: m[2]!.toUpperCase() });
  }
  return forks;
}

/**
 * The WAL segment size a backup's own figures allow (its start LSN lies in its start segment), or
 * undefined when more than one size (1 MB to 1 GB) fits.
 */
export function inferSegmentBytes(from: ReplayFrom): number | undefined {
  if (!from.startLsn || !SEGMENT.test(from.start)) return undefined;
  const lsn = lsnValue(from.startLsn);
  const fits: number[] = [];
  for (let bytes = MB; bytes <= 1024 * MB; bytes *= 2) {
    const n = lsn / BigInt(bytes);
    const perLog = 0x1_0000_0000n / BigInt(bytes);
    if (`${hex8(n / perLog)}${hex8(n % perLog)}` === from.start.slice(8)) fits.push(bytes);
  }
  return fits.length === 1 ? fits[0] : undefined;
}

/**
 * The timeline recovery from a backup on `startTimeline` follows: PostgreSQL's 'latest' probes the
 * history files from the next timeline up and takes the last one of the unbroken run.
 */
export function newestTimeline(listed: string[], startTimeline: number): number {
  const histories = new Set(listed.map((n) => HISTORY.exec(n)?.[1]).filter((x): x is string => !!x));
  let tl = startTimeline;
  while (histories.has(hex8(tl + 1))) tl += 1;
  return tl;
}

/**
 * The segments recovery would replay from a backup, as PostgreSQL reads them: at each position the
 * file of the newest timeline of the followed history that had begun there (a parent timeline's
 * segments count only up to its switch point; abandoned branches and the parent's segments after a
 * switch never count), up to the first position the archive lacks. Everything of the followed history
 * archived after that hole is unreachable from this backup, and a hole before the backup's stop
 * segment leaves the backup itself unrecoverable.
 */
export function replaySegments(all: string[], from: ReplayFrom, path: RecoveryPath): Replay {
  const perLog = 0x1_0000_0000n / BigInt(path.segmentBytes);
  const numberOf = (name: string) => BigInt(`0x${name.slice(8, 16)}`) * perLog + BigInt(`0x${name.slice(16, 24)}`);
  const nameOf = (tl: number, n: bigint) => `${hex8(tl)}${hex8(n / perLog)}${hex8(n % perLog)}`;
  const startTl = parseInt(from.start.slice(0, 8), 16);
  // The followed history: each timeline with the segment it began in (its parent's switch point).
  const timelines: { tl: number; begin: bigint; end: bigint | null }[] = [];
  let begin = 0n;
  for (const f of path.forks) {
    const end = lsnValue(f.switchLsn);
    timelines.push({ tl: f.timeline, begin, end });
    begin = end / BigInt(path.segmentBytes);
  }
  timelines.push({ tl: path.timeline, begin, end: null });
  const own = timelines.find((t) => t.tl === startTl);
  let notChild: string | null = null;
  if (!own)
    notChild = `the backup is on timeline ${startTl}, which is not in the history of timeline ${path.timeline} (the archive's newest): recovery would stop with "requested timeline ${path.timeline} is not a child of this server's history"`;
  else if (from.startLsn) {
    // The backup's point must precede its own timeline's end and every later switch point of the
    // followed history: a later point-in-time restore to an earlier point (a switch point below the
    // backup) abandoned the branch the backup is on, whatever timeline numbers came between.
    const at = lsnValue(from.startLsn);
    const later = path.forks.slice(path.forks.findIndex((f) => f.timeline === startTl));
    const cut = own.end === null ? undefined : later.find((f) => lsnValue(f.switchLsn) <= at);
    if (cut)
      notChild = `the backup (timeline ${startTl} at ${from.startLsn}) lies after timeline ${path.timeline}'s history left timeline ${cut.timeline} at ${cut.switchLsn}: it is on an abandoned branch, and recovery would stop with "requested timeline ${path.timeline} is not a child of this server's history"`;
  }
  const followed = timelines.filter((t) => t.tl >= startTl);
  const expectedAt = (n: bigint) => {
    let tl = startTl;
    for (const t of followed) if (t.begin <= n) tl = t.tl;
    return nameOf(tl, n);
  };
  const archived = new Set(all.filter((s) => SEGMENT.test(s)));
  const first = numberOf(from.start);
  // Only the followed history's files count: the newest timeline's beyond each position.
  const onPath = [...archived].filter((s) => numberOf(s) >= first && expectedAt(numberOf(s)) === s).map(numberOf);
  const segments: string[] = [];
  let n = first;
  while (archived.has(expectedAt(n))) {
    segments.push(expectedAt(n));
    n += 1n;
  }
  const stop = from.stop && SEGMENT.test(from.stop) ? numberOf(from.stop) : first;
  const beyond = onPath.filter((x) => x > n).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const withinBackup = n <= stop;
  const gap: ArchiveGap | null =
    beyond.length > 0 || withinBackup
      ? {
          missing: expectedAt(n),
          lastReachable: segments.at(-1) ?? `(none: ${from.start} is missing)`,
          nextArchived: beyond.length > 0 ? expectedAt(beyond[0]!) : null,
          segmentsBeyond: beyond.length,
          withinBackup,
        }
      : null;
  const newer = new Set<number>();
  for (const name of all) {
    const tl = SEGMENT.test(name) ? parseInt(name.slice(0, 8), 16) : HISTORY.test(name) ? parseInt(name.slice(0, 8), 16) : 0;
    if (tl > path.timeline) newer.add(tl);
  }
  // Segments of ancestor timelines beyond their switch point (the segment holding the switch point
  // itself is shared: recovery reads the new timeline's copy of it).
  const ends = new Map(timelines.filter((t) => t.end !== null).map((t) => [t.tl, t.end! / BigInt(path.segmentBytes)]));
  let abandonedSegments = 0;
  for (const name of archived) {
    const end = ends.get(parseInt(name.slice(0, 8), 16));
    if (end !== undefined && numberOf(name) > end && numberOf(name) >= first) abandonedSegments += 1;
  }
  return {
    timeline: path.timeline,
    segments,
    gap,
    notChild,
    abandonedSegments,
    newerTimelines: [...newer].sort((a, b) => a - b),
  };
}

/**
 * The history recovery from a backup would follow in this archive: its newest timeline (with the
 * history file read through the source) and the WAL segment size (given, from the backup's own
 * figures, or else the size of its first archived segment).
 */
export async function recoveryPath(
  source: WalArchiveSource,
  listed: string[],
  from: ReplayFrom,
  options: { timeoutMs: number; osUser?: string; segmentBytes?: number; timeline?: number },
): Promise<RecoveryPath> {
  const deadline = Date.now() + options.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const startTl = parseInt(from.start.slice(0, 8), 16);
  const timeline = options.timeline ?? newestTimeline(listed, startTl);
  if (timeline > startTl && !listed.includes(`${hex8(timeline)}.history`))
    throw new Error(`the archive lacks ${hex8(timeline)}.history, the history of timeline ${timeline} recovery must follow`);
  let segmentBytes = options.segmentBytes ?? inferSegmentBytes(from);
  let forks: TimelineFork[] = [];
  if (timeline > startTl || segmentBytes === undefined) {
    await withFetchDir('sav3-walpath-', options.osUser ?? process.env.PGBACKREST_OS_USER ?? 'postgres', async (dir) => {
      if (timeline > startTl) {
        const name = `${hex8(timeline)}.history`;
        await source.fetchSegment(name, join(dir, name), left());
        forks = parseHistory(readFileSync(join(dir, name), 'utf8'));
      }
      if (segmentBytes === undefined && listed.includes(from.start)) {
        await source.fetchSegment(from.start, join(dir, from.start), left());
        segmentBytes = statSync(join(dir, from.start)).size;
      }
    });
  }
  // A backup whose first segment is not archived cannot be recovered at any size: 16 MB (PostgreSQL's default) then only names the hole.
  return { timeline, forks, segmentBytes: segmentBytes ?? 16 * MB, ...(options.timeline !== undefined ? { pinned: true } : {}) };
}

/** What recovery from a backup can replay, from the archive's listing (and the followed timeline's history file). */
export async function archiveContinuity(
  source: WalArchiveSource,
  from: ReplayFrom,
  options: { timeoutMs: number; osUser?: string; segmentBytes?: number; timeline?: number },
): Promise<Replay> {
  const deadline = Date.now() + options.timeoutMs;
  const listed = await source.listSegments(options.timeoutMs);
  const path = await recoveryPath(source, listed, from, { ...options, timeoutMs: Math.max(1, deadline - Date.now()) });
  return replaySegments(listed, from, path);
}

/**
 * Every listed backup's recovery against the archive, from one listing (history files read once per
 * timeline): the inventory's `recovery` field. A backup whose WAL is unknown gets null.
 */
export async function backupRecovery(
  source: WalArchiveSource,
  backups: readonly { label: string; wal: { start: string | null; stop: string | null }; lsn: { start: string | null } }[],
  options: { timeoutMs: number; osUser?: string; timeline?: number },
): Promise<Map<string, BackupRecovery | null>> {
  const deadline = Date.now() + options.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const listed = await source.listSegments(left());
  const froms = backups.filter((b) => b.wal.start && SEGMENT.test(b.wal.start)).map((b) => ({ label: b.label, from: replayFrom(b) }));
  // One segment size for the archive: the first backup that tells it, else measured once.
  const segmentBytes = froms.map((f) => inferSegmentBytes(f.from)).find((x) => x !== undefined);
  const paths = new Map<string, RecoveryPath>();
  const out = new Map<string, BackupRecovery | null>(backups.map((b) => [b.label, null]));
  for (const { label, from } of froms) {
    const tl = from.start.slice(0, 8);
    let path = paths.get(tl);
    if (!path) {
      path = await recoveryPath(source, listed, from, {
        timeoutMs: left(),
        osUser: options.osUser,
        segmentBytes,
        timeline: options.timeline,
      });
      paths.set(tl, path);
    }
    const replay = replaySegments(listed, from, path);
    // Followed as PostgreSQL's 'latest' (the live timeline unknown), newer timelines in the archive
    // are lost to recovery; with the live timeline pinned they are branches it abandoned.
    const stranded =
      !path.pinned && replay.newerTimelines.length > 0
        ? `recovery with PostgreSQL's 'latest' would follow timeline ${replay.timeline}, but the archive holds timeline(s) ${replay.newerTimelines.join(', ')} too (a history file missing from the repository?): everything on them would be lost`
        : null;
    const problem = replay.notChild ?? (replay.gap ? describeGap(replay.gap) : stranded);
    out.set(label, {
      timeline: replay.timeline,
      segments: replay.segments.length,
      toEndOfArchive: problem === null,
      problem,
      ...(replay.notChild ? { notChild: true } : {}),
    });
  }
  return out;
}

/** An operator's sentence for a hole. */
export function describeGap(gap: ArchiveGap): string {
  if (gap.withinBackup)
    return `the archive lacks ${gap.missing}, part of the backup's own WAL (after ${gap.lastReachable}): the backup cannot be recovered to a consistent state from this archive`;
  return `the archived WAL has a hole after ${gap.lastReachable} (missing: ${gap.missing}; next archived: ${gap.nextArchived}): recovery stops there, and the ${gap.segmentsBeyond} segment(s) archived after the hole can never be replayed from this backup`;
}

/** Parses pg_waldump output (run with TZ=UTC). */
export function parseWalDump(text: string): Pick<WalScan, 'restorePoints' | 'lastCommitAt'> {
  const restorePoints: WalScan['restorePoints'] = [];
  let lastCommitAt: string | null = null;
  let lastTime: string | null = null;
  for (const line of text.split('\n')) {
    const commit = /desc: (?:COMMIT|ABORT) (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) UTC/.exec(line);
    if (commit) {
      lastTime = new Date(`${commit[1]}T${commit[2]}Z`).toISOString();
      if (!lastCommitAt || lastTime > lastCommitAt) lastCommitAt = lastTime;
      continue;
    }
    const point = /lsn: ([0-9A-F]+\/[0-9A-F]+),.*desc: RESTORE_POINT (.+)$/.exec(line);
    if (point) restorePoints.push({ name: point[2]!.trim(), lsn: point[1]!, at: lastTime });
  }
  return { restorePoints, lastCommitAt };
}

/**
 * Fetches the archived WAL recovery from the backup would replay and reads it with pg_waldump,
 * within the bound (throws when the bound or `maxSegments` is exceeded: the target could not be verified).
 */
export async function scanArchive(
  source: WalArchiveSource,
  from: ReplayFrom,
  options: {
    pgBin: string;
    osUser: string;
    timeoutMs: number;
    maxSegments?: number;
    segmentBytes?: number;
    timeline?: number;
    /** What recovery replays, when the caller read the archive already (else listed here). */
    replay?: Replay;
  },
): Promise<WalScan> {
  const deadline = Date.now() + options.timeoutMs;
  const left = () => {
    const ms = deadline - Date.now();
    if (ms <= 0) throw new Error(`reading the archived WAL took longer than ${options.timeoutMs / 1000} s`);
    return ms;
  };
  const { segments, gap, notChild } =
    options.replay ??
    (await archiveContinuity(source, from, {
      timeoutMs: left(),
      osUser: options.osUser,
      segmentBytes: options.segmentBytes,
      timeline: options.timeline,
    }));
  if (segments.length > (options.maxSegments ?? 4096))
    throw new Error(`the archive holds ${segments.length} WAL segments after the backup: too many to read here`);
  return withFetchDir('sav3-walscan-', options.osUser, async (dir) => {
    for (const s of segments) await source.fetchSegment(s, join(dir, s), left());
    // One pg_waldump per timeline (records cross segment ends; the segments are consecutive).
    const runs: string[][] = [];
    for (const s of segments) {
      const run = runs.at(-1);
      if (run && run[0]!.slice(0, 8) === s.slice(0, 8)) run.push(s);
      else runs.push([s]);
    }
    let out = '';
    for (const run of runs) {
      const res = await runAs(options.osUser, join(options.pgBin, 'pg_waldump'), ['-p', dir, run[0]!, run.at(-1)!], {
        timeoutMs: left(),
        env: { ...process.env, TZ: 'UTC' },
      }).catch((err: Error & { stdout?: string }) => {
        // pg_waldump ends with an error at the end of the written WAL: what it printed is good.
        if (err.stdout === undefined) throw err;
        return { stdout: err.stdout, stderr: '' };
      });
      out += res.stdout;
    }
    return { segments: segments.length, gap, notChild, ...parseWalDump(out) };
  });
}

/** Runs `fn` with a scratch directory archive-get can write into (as `osUser`), removed afterwards. */
async function withFetchDir<T>(prefix: string, osUser: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    if (isRoot()) chownSync(dir, ...idsOf(osUser));
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function idsOf(user: string): [number, number] {
  // getent is everywhere PostgreSQL is; fall back to Debian's postgres ids.
  try {
    const line = execFileSync('getent', ['passwd', user]).toString().split(':');
    return [Number(line[2]), Number(line[3])];
  } catch {
    return [101, 104];
  }
}
