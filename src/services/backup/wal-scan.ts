// What the WAL archive really holds for a point-in-time restore: the restore points (names) and the
// newest commit time after a backup. PostgreSQL 13+ stops with
// `FATAL: recovery ended before configured recovery target was reached` when a target is not in
// the WAL it replays: the restore script checks the target here before it touches anything.
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, runAs } from './os-command.ts';

/** The archive as the scanner needs it (pgBackRest's repo-ls and archive-get). */
export interface WalArchiveSource {
  /** Every archived WAL segment name (24 hex digits), any timeline. */
  listSegments(timeoutMs: number): Promise<string[]>;
  /** Copies one archived segment (decompressed) to `dest`. */
  fetchSegment(segment: string, dest: string, timeoutMs: number): Promise<void>;
}

/** A hole in the archived WAL: recovery stops after `lastReachable`; what is archived after it is lost to it. */
export interface ArchiveGap {
  lastReachable: string;
  /** The next archived segment after the hole. */
  nextArchived: string;
  /** Archived segments after the hole, which recovery from this backup can never replay. */
  segmentsBeyond: number;
}

export interface WalScan {
  segments: number;
  /** Null when the archive is continuous from the backup's first segment to its newest one. */
  gap: ArchiveGap | null;
  restorePoints: { name: string; lsn: string; at: string | null }[];
  /** The newest commit (or abort) time in the scanned WAL: a time target must not be later. */
  lastCommitAt: string | null;
}

const SEGMENT = /^[0-9A-F]{24}$/;

/** `0/3000028` → a comparable bigint. */
export function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/**
 * The segments recovery would replay from `startSegment`: for each position the highest timeline
 * archived (PostgreSQL reads the newest timeline of the history it follows first). Abandoned
 * branches of older restores are not told apart here; they only matter when two timelines newer
 * than the backup hold the same position, which the scan then reads from the newest.
 */
export function replaySegments(all: string[], startSegment: string): { segments: string[]; gap: ArchiveGap | null } {
  const startTl = startSegment.slice(0, 8);
  const startPos = startSegment.slice(8);
  const byPos = new Map<string, string>();
  for (const s of all) {
    if (!SEGMENT.test(s)) continue;
    const tl = s.slice(0, 8);
    const pos = s.slice(8);
    if (tl < startTl || pos < startPos) continue;
    const had = byPos.get(pos);
    if (!had || had.slice(0, 8) < tl) byPos.set(pos, s);
  }
  const ordered = [...byPos.keys()].sort().map((pos) => byPos.get(pos)!);
  // Recovery replays position after position and stops at the first one the archive lacks
  // (the backup's own first segment included): nothing archived after a hole is reachable.
  let reachable = 0;
  let expected = [startPos];
  while (reachable < ordered.length && expected.includes(ordered[reachable]!.slice(8))) {
    expected = followers(ordered[reachable]!);
    reachable += 1;
  }
  const beyond = ordered.length - reachable;
  return {
    segments: ordered.slice(0, reachable),
    gap:
      beyond > 0
        ? {
            lastReachable: ordered[reachable - 1] ?? `(none: ${startSegment} is missing)`,
            nextArchived: ordered[reachable]!,
            segmentsBeyond: beyond,
          }
        : null,
  };
}

/** What recovery from `startSegment` can replay, from the archive's listing alone (no segment read). */
export async function archiveContinuity(source: WalArchiveSource, startSegment: string, timeoutMs: number) {
  return replaySegments(await source.listSegments(timeoutMs), startSegment);
}

/** An operator's sentence for a hole. */
export function describeGap(gap: ArchiveGap): string {
  return `the archived WAL has a hole after ${gap.lastReachable} (next archived: ${gap.nextArchived}): recovery stops there, and the ${gap.segmentsBeyond} segment(s) archived after the hole can never be replayed from this backup`;
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
 * Fetches the archived WAL from `startSegment` on and reads it with pg_waldump, within the bound
 * (throws when the bound or `maxSegments` is exceeded: the target could not be verified).
 */
export async function scanArchive(
  source: WalArchiveSource,
  startSegment: string,
  options: { pgBin: string; osUser: string; timeoutMs: number; maxSegments?: number },
): Promise<WalScan> {
  const deadline = Date.now() + options.timeoutMs;
  const left = () => {
    const ms = deadline - Date.now();
    if (ms <= 0) throw new Error(`reading the archived WAL took longer than ${options.timeoutMs / 1000} s`);
    return ms;
  };
  const { segments, gap } = replaySegments(await source.listSegments(left()), startSegment);
  if (segments.length > (options.maxSegments ?? 4096))
    throw new Error(`the archive holds ${segments.length} WAL segments after the backup: too many to read here`);
  const dir = mkdtempSync(join(tmpdir(), 'sav3-walscan-'));
  try {
    if (isRoot()) chownSync(dir, ...idsOf(options.osUser));
    for (const s of segments) await source.fetchSegment(s, join(dir, s), left());
    // One pg_waldump per run of consecutive segments of one timeline (records cross segment ends).
    const runs: string[][] = [];
    for (const s of segments) {
      const run = runs.at(-1);
      const prev = run?.at(-1);
      if (run && prev && prev.slice(0, 8) === s.slice(0, 8) && followers(prev).includes(s.slice(8))) run.push(s);
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
    return { segments: segments.length, gap, ...parseWalDump(out) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The positions that can follow `segment` (timeline aside): the next one in its log file or, where
 * a log file ends for some WAL segment size (a power of two from 1 MB to 1 GB: 4096 down to 4
 * segments per log file), the first of the next log file. The archive listing does not say the
 * cluster's segment size; a log file's end is only taken when the next number in it is absent.
 */
function followers(segment: string): string[] {
  const log = parseInt(segment.slice(8, 16), 16);
  const seg = parseInt(segment.slice(16, 24), 16) + 1;
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
  const sameLog = `${hex(log)}${hex(seg)}`;
  const isLogEnd = seg >= 4 && seg <= 4096 && (seg & (seg - 1)) === 0;
  return isLogEnd ? [sameLog, `${hex(log + 1)}${hex(0)}`] : [sameLog];
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
