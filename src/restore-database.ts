// scripts/dr/restore-database.sh: the destructive restore of the runbook, on the database host.
//   restore-database --from-backup latest|<label> [--target-time T | --target-name N] [--pg-data DIR] (--confirm | --dry-run)
// Environment: SAV3_API_URL, SAV3_ADMIN_TOKEN (operator), DATABASE_URL (the server restored here),
// PGBACKREST_STANZA, PGBACKREST_CONFIG, PGBACKREST_BIN, PG_BIN, PGDATA; MEDIA_* for the media pass.
// Exit codes: 0 the restored primary verified (or a dry run that could go ahead), 1 failed, 2 usage;
// the replica's state is a line of its own ("replica: …"), never the exit code.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { loadConfig, type MediaBackendConfig } from './config/config.ts';
import {
  checkTarget,
  describeAnswer,
  planRestore,
  readOnlyAnswer,
  RestorePlanError,
  runRestore,
  type RestoreApi,
  type RestoreServer,
  primaryVerified,
  replicaOf,
  verifyReport,
  type VerifyReport,
} from './services/backup/database-restore.ts';
import { dataDirState, proveDataDirectory } from './services/backup/data-dir-identity.ts';
import { findObjectsWithoutMetadata } from './services/backup/media-orphans.ts';
import { isRoot, runAs } from './services/backup/os-command.ts';
import { PgBackRestCli } from './services/backup/pgbackrest.ts';
import { describeGap, recoveryPath, replayFrom, replaySegments, scanArchive, type Replay } from './services/backup/wal-scan.ts';
import { RESTORE_STEPS } from './services/backup/restore-report.ts';
import { httpTransport, RestoreJournal, RestoreReporter } from './services/backup/restore-reporter.ts';
import { MinioObjectStore } from './adapters/minio-object-store.ts';
import type { ObjectStore } from './adapters/object-store.ts';
import { httpCall, runMain } from './adapters/http-call.ts';
import { errorMessage } from './lib/error-message.ts';
import { readCurrentTimeline } from './adapters/pg-connection.ts';

export const USAGE = `usage: scripts/dr/restore-database.sh --from-backup latest|<label> [--target-time ISO | --target-name NAME] [--pg-data DIR] [--timeline N] [--discard-unarchived] (--confirm | --dry-run)
       scripts/dr/restore-database.sh --report-pending
  --from-backup   the backup to restore: latest, or a label from GET /admin/backups
  --target-time   point-in-time: recover up to this time (ISO 8601 with a zone), then promote
  --target-name   point-in-time: recover up to this restore point (POST /admin/database/restore-point)
  --pg-data       the data directory (default: PGDATA)
  --allow-standby restore a data directory holding standby.signal while DATABASE_URL does not answer
                  (only once you know no primary runs elsewhere: it is promoted)
  --skip-target-check  act even when the target could not be verified in the archived WAL (a target
                  recovery cannot reach stops PostgreSQL: check it yourself first)
  --timeline      the timeline recovery follows (default: the one this server is on now; the archive's
                  newer timelines, e.g. a switchover's abandoned promotion, are refused without it)
  --discard-unarchived  restore to the end of the archive even though this server holds WAL that
                  never reached the archive (archiving failing): what is only in it is lost
  --dry-run       print the plan, the backup and the WAL it would use; change nothing
  --confirm       required to act: read-only on, stop PostgreSQL, restore --delta, start, wait for promotion, verify
  --report-pending  send the API the restore reports it could not take during earlier restores
Each restore reports its start, every step (with its time) and its outcome to the API (audited as
database.restore; joins the timeline of an open incident). The reports are first written to a local
journal (SAV3_RESTORE_JOURNAL_DIR, default ./.sav3/restores): an unreachable API never stops the restore.
After the verification it prints two lines: "primary: …" (connect, canary write, migrations passed or
not) and "replica: …": FOLLOWS the restored primary (streams from it on its timeline), MUST BE REBUILT
(scripts/dr/rebuild-primary.sh on its host; never promote it as it is), or none configured; it waits
up to SAV3_REPLICA_WAIT_SECONDS (30) for a replica to follow before saying it must be rebuilt.
Exit codes: 0 the restored primary passed the verification (or a dry run that could go ahead),
whatever the replica line says; 1 failed or refused; 2 usage.
Environment: SAV3_API_URL SAV3_ADMIN_TOKEN DATABASE_URL PGBACKREST_STANZA [PGBACKREST_CONFIG PGBACKREST_BIN PG_BIN PGDATA MEDIA_* SAV3_RESTORE_JOURNAL_DIR SAV3_REPLICA_WAIT_SECONDS SAV3_UNARCHIVED_GRACE_SECONDS]`;

interface Args {
  backup?: string;
  targetTime?: string;
  targetName?: string;
  pgData?: string;
  allowStandby: boolean;
  skipTargetCheck: boolean;
  /** The timeline recovery follows, given (else the live server's). */
  timeline?: number;
  discardUnarchived: boolean;
  confirm: boolean;
  dryRun: boolean;
  help: boolean;
  reportPending: boolean;
}

/**
 * An ISO 8601 time with a zone as one the restore takes later (the zone as ±HH:MM), or null: what
 * passes the usage check is exactly what the plan accepts (a usage error is exit 2, never 1 later).
 */
export function targetTimeOf(value: string): string | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}(?::?\d{2})?)$/.exec(value);
  if (!m) return null;
  const [, y, mo, d, h, mi, sec = '00', frac = '', zone] = m;
  if (Number(h) > 23 || Number(mi) > 59 || Number(sec) > 59) return null;
  // Date.parse rolls 2026-02-30 over into March: the day must exist in its month.
  if (new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d))).getUTCDate() !== Number(d) || Number(mo) < 1 || Number(mo) > 12) return null;
  const z = zone === 'Z' ? 'Z' : `${zone!.slice(0, 3)}:${zone!.slice(3).replace(':', '') || '00'}`;
  const iso = `${y}-${mo}-${d}T${h}:${mi}:${sec}${frac}${z}`;
  return Number.isNaN(Date.parse(iso)) ? null : iso;
}

export function parseArgs(argv: string[]): Args | string {
  const args: Args = {
    allowStandby: false,
    skipTargetCheck: false,
    discardUnarchived: false,
    confirm: false,
    dryRun: false,
    help: false,
    reportPending: false,
  };
  const value = (i: number, flag: string) => {
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  try {
    for (let i = 0; i < argv.length; i += 1) {
      const a = argv[i]!;
      if (a === '--from-backup') args.backup = value(i++, a);
      else if (a === '--target-time') args.targetTime = value(i++, a);
      else if (a === '--target-name') args.targetName = value(i++, a);
      else if (a === '--pg-data') args.pgData = value(i++, a);
      else if (a === '--confirm') args.confirm = true;
      else if (a === '--skip-target-check') args.skipTargetCheck = true;
      else if (a === '--allow-standby') args.allowStandby = true;
      else if (a === '--discard-unarchived') args.discardUnarchived = true;
      else if (a === '--timeline') {
        const v = value(i++, a);
        if (!/^[1-9]\d{0,8}$/.test(v)) return '--timeline must be a timeline number';
        args.timeline = Number(v);
      } else if (a === '--dry-run') args.dryRun = true;
      else if (a === '--report-pending') args.reportPending = true;
      else if (a === '-h' || a === '--help') args.help = true;
      else return `unknown argument: ${a}`;
    }
  } catch (err) {
    return (err as Error).message;
  }
  if (args.help) return args;
  if (args.reportPending) return argv.length === 1 ? args : '--report-pending takes no other option';
  if (!args.backup) return '--from-backup is required';
  if (!/^(latest|\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?)$/.test(args.backup)) return '--from-backup must be latest or a backup label';
  if (args.targetTime) {
    const time = targetTimeOf(args.targetTime);
    if (!time) return '--target-time must be ISO 8601 with a zone, e.g. 2026-11-26T08:15:00Z';
    args.targetTime = time;
  }
  if (args.targetName && !/^[A-Za-z0-9._:-]{1,63}$/.test(args.targetName)) return '--target-name must be a restore point name';
  if (args.targetTime && args.targetName) return 'give --target-time or --target-name, not both';
  if (args.confirm && args.dryRun) return 'give --confirm or --dry-run, not both';
  if (!args.confirm && !args.dryRun) return 'refusing to restore without --confirm (or look first with --dry-run); nothing was changed';
  return args;
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
};

const apiBase = () => (process.env.SAV3_API_URL ?? 'http://127.0.0.1:3000').replace(/\/$/, '');
function apiToken(): string {
  const token = process.env.SAV3_ADMIN_TOKEN;
  if (!token) throw new RestorePlanError('SAV3_ADMIN_TOKEN is not set (an operator token)');
  return token;
}
export const journalDir = () => resolve(process.env.SAV3_RESTORE_JOURNAL_DIR ?? join('.sav3', 'restores'));
/** How long the end of a restore waits for the API to take the reports it has not yet taken. */
const REPORT_FLUSH_MS = 10_000;

function api(): RestoreApi & { verifyOnce(): Promise<VerifyReport | string> } {
  const base = apiBase();
  const token = apiToken();
  const call = (method: string, path: string, body: unknown) =>
    httpCall(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      timeoutMs: 60_000,
    });
  /** One verification: the verify route's report, or why the answer was none. */
  const verifyOnce = async (): Promise<VerifyReport | string> => {
    const res = await call('POST', '/admin/verify/database', {}).catch((err: unknown) => (err as Error).message);
    if (typeof res === 'string') return res;
    const report = verifyReport.safeParse(parseJson(res.text));
    // 200 with every check passed, 503 with one failed: anything else is not a verification.
    if (!report.success || (res.status !== 200 && res.status !== 503))
      return `not a verification report: ${describeAnswer(res.status, res.text)}`;
    return report.data;
  };
  return {
    verifyOnce,
    async setReadOnly(enabled, reason) {
      const res = await call('PUT', '/admin/read-only', { enabled, reason });
      const answer = readOnlyAnswer.safeParse(parseJson(res.text));
      // Only the API's own answer that the mode is now as asked counts (a proxy's 200 page does not).
      if (res.status !== 200 || !answer.success || answer.data.readOnly.enabled !== enabled)
        throw new Error(`read-only ${enabled ? 'on' : 'off'} was not confirmed by the API: ${describeAnswer(res.status, res.text)}`);
    },
    async verifyDatabase() {
      // Right after promotion the service may still be reconnecting: a few tries. Success is the
      // restored primary verified; the replica is judged apart (replicaVerdict), never here.
      let last = 'no answer';
      let report: VerifyReport | undefined;
      for (let attempt = 0; attempt < 10; attempt += 1) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, 1000));
        const got = await verifyOnce();
        if (typeof got === 'string') {
          last = got;
          continue;
        }
        report = got;
        const primary = primaryVerified(got);
        if (primary.ok) return { ok: true, report: got };
        last = `the restored primary did not pass: ${primary.failed.join('; ')}`;
      }
      if (report) return { ok: false, report };
      throw new Error(`no verification through the API (${last})`);
    },
  };
}

/** The server restored on this host; `logPath` is the log of a start made before (tests). */
export function restoreServer(
  pgData: string,
  pgBin: string,
  osUser: string,
  databaseUrl: string,
  startLog?: string,
  /** After the stop, refuse to go on while WAL waits to be archived (a restore to the end of the archive would lose it). */
  requireArchived = false,
): RestoreServer {
  const ctl = (args: string[]) => runAs(osUser, join(pgBin, 'pg_ctl'), ['-D', pgData, ...args], { timeoutMs: 660_000 });
  let logPath: string | undefined = startLog;
  /** postmaster.pid names a live process (pg_ctl status when this user cannot read the file). */
  const postmasterRunning = async (): Promise<boolean> => {
    let pid: number;
    try {
      pid = Number(readFileSync(join(pgData, 'postmaster.pid'), 'utf8').split('\n')[0]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      return ctl(['status']).then(
        () => true,
        (e: Error & { stdout?: string }) => !/no server running/.test(`${e.stdout ?? ''}${e.message}`),
      );
    }
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  return {
    stop: async () => {
      await ctl(['-m', 'fast', '-w', '-t', '600', 'stop']).catch((err: Error & { stderr?: string }) => {
        if (!/Is server running\?|PID file .* does not exist/.test(err.stderr ?? err.message)) throw err;
      });
      // A clean stop archives the last segment (the archiver runs until nothing is ready): what is
      // still waiting now failed to be archived, and a restore to the end of the archive loses it.
      if (requireArchived) {
        const waiting = await unarchivedWal(pgData, osUser, 0);
        if (waiting.length > 0)
          throw new Error(
            `PostgreSQL stopped with ${waiting.length} WAL segment(s) never archived (oldest ${waiting[0]}): restoring now would lose every write in them; nothing was restored. Start it again, fix archiving, and rerun (or accept the loss with --discard-unarchived)`,
          );
      }
    },
    start: async () => {
      const path = join(pgData, '..', `restore-${Date.now()}.log`);
      await ctl(['-l', path, '-w', '-t', '600', 'start'])
        .then(() => (logPath = path))
        .catch(async (err: Error) => {
          // -l needs a writable parent; fall back to the server's own logging.
          if (/could not open log file|Permission denied/.test(err.message)) return ctl(['-w', '-t', '600', 'start']);
          // Recovery can end (FATAL) before pg_ctl sees the server ready: say why from the log.
          const fatal = serverLogErrors(path);
          if (fatal.length) throw new Error(`PostgreSQL did not start: ${fatal.join(' | ')} (server log: ${path})`);
          throw err;
        });
    },
    async waitPromoted(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      let lastError = '';
      while (Date.now() < deadline) {
        // Recovery that cannot reach its target ends the postmaster (FATAL): stop waiting at once.
        if (!(await postmasterRunning())) {
          const fatal = logPath ? serverLogErrors(logPath) : [];
          throw new Error(
            `PostgreSQL exited during recovery${fatal.length ? `: ${fatal.join(' | ')}` : ''} (server log: ${logPath ?? "the server's own log"})`,
          );
        }
        const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 2000 });
        client.on('error', () => undefined);
        try {
          await client.connect();
          const { rows } = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
          if (rows[0]?.r === false) return;
          lastError = 'still in recovery';
        } catch (err) {
          lastError = (err as Error).message;
        } finally {
          await client.end().catch(() => undefined);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`the server did not promote within ${timeoutMs / 1000} s (${lastError})`);
    },
  };
}

/**
 * The timeline this server is on now: asked of DATABASE_URL's server (exact right after a
 * promotion), else read from the data directory's control file; undefined when neither answers.
 */
async function liveTimeline(databaseUrl: string | undefined, pgData: string | undefined, pgBin: string, osUser: string) {
  if (databaseUrl) {
    // Not answering: the control file below.
    const answered = await readCurrentTimeline(databaseUrl, 3000).catch(() => undefined);
    if (answered !== undefined) return answered;
  }
  if (!pgData) return undefined;
  try {
    const { stdout } = await runAs(osUser, join(pgBin, 'pg_controldata'), ['-D', pgData], { timeoutMs: 10_000 });
    const m = /Latest checkpoint's TimeLineID:\s+(\d+)/.exec(stdout);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** How long a segment may wait to be archived before the dry run calls archiving stuck (SAV3_UNARCHIVED_GRACE_SECONDS, 30). */
function unarchivedGraceSeconds(): number {
  const v = Number(process.env.SAV3_UNARCHIVED_GRACE_SECONDS ?? 30);
  return Number.isFinite(v) && v >= 0 ? v : 30;
}

/**
 * The WAL segments of `pgData` waiting to be archived for longer than `olderThanMs` (their
 * `.ready` files in pg_wal/archive_status), oldest first.
 */
export async function unarchivedWal(pgData: string, osUser: string, olderThanMs: number): Promise<string[]> {
  const dir = join(pgData, 'pg_wal', 'archive_status');
  const out = await runAs(osUser, 'find', [dir, '-maxdepth', '1', '-name', '*.ready', '-printf', '%f %T@\n'], { timeoutMs: 10_000 }).catch(
    () => ({ stdout: '' }),
  );
  const now = Date.now();
  return out.stdout
    .split('\n')
    .map((l) => l.trim().split(' '))
    .filter(
      ([name, at]) =>
        name && /^([0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)\.ready$/.test(name) && now - Number(at) * 1000 >= olderThanMs,
    )
    .map(([name]) => name!.replace(/\.ready$/, ''))
    .sort();
}

/** The FATAL/PANIC lines (and the recovery messages around them) at the end of a server log. */
function serverLogErrors(path: string): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => /FATAL|PANIC|recovery target/.test(l))
      .slice(-4)
      .map((l) => l.slice(0, 300));
  } catch {
    return [];
  }
}

function mediaStores(): Map<string, ObjectStore> | undefined {
  try {
    const config = loadConfig(process.env);
    const stores = new Map<string, ObjectStore>();
    const all: MediaBackendConfig[] = [config.mediaPrimary, ...(config.mediaBackup ? [config.mediaBackup] : [])];
    for (const m of all) stores.set(m.name, new MinioObjectStore(m));
    return stores;
  } catch {
    return undefined;
  }
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write(`${args}\n${USAGE}\n`);
    return 2;
  }
  if (args.help) {
    say(USAGE);
    return 0;
  }
  if (args.reportPending) return reportPending();
  const stanza = process.env.PGBACKREST_STANZA;
  if (!stanza) {
    process.stderr.write('PGBACKREST_STANZA is not set\n');
    return 1;
  }
  const osUser = process.env.PGBACKREST_OS_USER ?? 'postgres';
  const tool = new PgBackRestCli({
    bin: process.env.PGBACKREST_BIN ?? 'pgbackrest',
    stanza,
    configPath: process.env.PGBACKREST_CONFIG,
    runAs: isRoot() ? osUser : undefined,
  });
  const started = performance.now();
  let reporter: RestoreReporter | undefined;
  try {
    const info = await tool.info(30_000);
    const request = { backup: args.backup!, targetTime: args.targetTime, targetName: args.targetName };
    let plan = planRestore(info, request);
    const pgBin = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
    // The archive as recovery will read it: on the history of the timeline this server is on now
    // (pinned: recovery_target_timeline), or of the one given; what it can replay from the backup.
    const pgData = args.pgData ?? process.env.PGDATA;
    const databaseUrl = process.env.DATABASE_URL;
    const live = args.timeline ?? (await liveTimeline(databaseUrl, pgData, pgBin, osUser));
    if (args.timeline !== undefined) say(`timeline: ${args.timeline} (--timeline)`);
    else if (live !== undefined) say(`timeline: ${live} (this server's)`);
    else say("timeline: this server's is unknown; recovery would follow the archive's newest (PostgreSQL's 'latest')");
    let listed: string[] | undefined;
    let replay: Replay | undefined;
    if (args.skipTargetCheck) say('archive: NOT checked (--skip-target-check)');
    else {
      listed = await tool.listSegments(60_000).catch((err: unknown) => {
        throw new RestorePlanError(
          `the archived WAL could not be listed (${errorMessage(err)}); nothing was changed. Check it yourself, then rerun with --skip-target-check`,
        );
      });
      const skipped: string[] = [];
      for (;;) {
        const backup = info.backups.find((b) => b.label === plan.backup.label)!;
        if (!backup.wal.start) throw new RestorePlanError(`backup ${backup.label} names no WAL: the archive cannot be checked`);
        const from = replayFrom(backup);
        const path = await recoveryPath(tool, listed, from, { timeoutMs: 60_000, osUser, timeline: live }).catch((err: unknown) => {
          throw new RestorePlanError(`${errorMessage(err)}; nothing was changed`);
        });
        replay = replaySegments(listed, from, path);
        if (!replay.notChild) break;
        // A backup on a branch the archive's newest timeline abandoned (taken before a point-in-time
        // restore moved the history on): recovery from it stops, after the data was replaced.
        if (request.backup !== 'latest')
          throw new RestorePlanError(`backup ${backup.label} cannot be restored: ${replay.notChild}; nothing was changed`);
        skipped.push(backup.label);
        say(`backup ${backup.label} skipped: ${replay.notChild}`);
        plan = planRestore({ ...info, backups: info.backups.filter((b) => !skipped.includes(b.label)) }, request);
      }
      if (replay.gap?.withinBackup)
        throw new RestorePlanError(`${describeGap(replay.gap)} (backup ${plan.backup.label}); nothing was changed`);
      // This server's timeline unknown (its control file gone, e.g. a restore interrupted before)
      // while the archive holds more than one branch after the backup: 'latest' may follow an
      // abandoned one (found by an outside attack: a rerun brought back an abandoned promotion's
      // row and lost two archived acknowledged writes). The operator names the timeline.
      if (live === undefined && replay.abandonedSegments > 0)
        throw new RestorePlanError(
          `this server's timeline is unknown and the archive holds more than one branch after backup ${plan.backup.label} (${replay.abandonedSegments} segment(s) archived on timelines after the point where timeline ${replay.timeline}'s history left them): recovery would follow timeline ${replay.timeline}, which may not be the one this server was on. Give it with --timeline N (the one named by the failed run's next: line, or GET /admin/dr/state database.newestTimeline); nothing was changed`,
        );
      if (replay.newerTimelines.length > 0) {
        const newer = replay.newerTimelines.join(', ');
        if (args.timeline !== undefined)
          say(`archive: holds timeline(s) ${newer}, newer than timeline ${replay.timeline} followed (--timeline): never replayed`);
        else if (live !== undefined)
          throw new RestorePlanError(
            `the archive holds timeline(s) ${newer}, newer than this server's timeline ${live}: a promotion that was abandoned (a switchover rolled back), or this server is not the newest primary. If those timelines were abandoned, rerun with --timeline ${live}; otherwise restore the node that holds the newest timeline. Nothing was changed`,
          );
        else
          throw new RestorePlanError(
            `recovery would follow timeline ${replay.timeline}, but the archive holds timeline(s) ${newer} too (a history file missing from the repository?): everything on them would be lost. Give the timeline to follow with --timeline N; nothing was changed`,
          );
      }
      say(`archive: recovery follows timeline ${replay.timeline}; ${replay.segments.length} segment(s) from ${plan.wal.from} replayable`);
    }
    // Recovery follows this server's timeline (or the one given), never an abandoned newer one.
    if (live !== undefined) plan = { ...plan, timeline: live };
    say(`plan: ${JSON.stringify(plan)}`);
    if (plan.target.type === 'end_of_archive') {
      // Recovery to the end of the archive stops at the first hole in it: whatever was archived
      // after the hole would be lost without a word. Only the listing is read.
      if (replay?.gap)
        throw new RestorePlanError(
          `${describeGap(replay.gap)}. A restore to the end of the archive would end at the hole: restore to a target before it (--target-time or --target-name), or accept the loss with --skip-target-check; nothing was changed`,
        );
      if (replay) say(`archive: continuous from ${plan.wal.from} (${replay.segments.length} segment(s))`);
    } else {
      // A target recovery cannot reach stops PostgreSQL after the data was replaced: check first.
      if (args.skipTargetCheck) say('target: NOT checked against the archived WAL (--skip-target-check)');
      else {
        const backup = info.backups.find((b) => b.label === plan.backup.label)!;
        const scan = await scanArchive(tool, replayFrom(backup), { pgBin, osUser, timeoutMs: 300_000, timeline: live, replay }).catch(
          (err: unknown) => {
            throw new RestorePlanError(
              `the target could not be verified in the archived WAL (${(err as Error).message}); nothing was changed. Check it yourself, then rerun with --skip-target-check`,
            );
          },
        );
        say(`target: ${checkTarget(plan, scan)} (${scan.segments} WAL segment(s) read)`);
        if (scan.gap) say(`archive: ${describeGap(scan.gap)}; the target is before the hole`);
      }
    }
    if (!pgData) throw new RestorePlanError('--pg-data (or PGDATA) is required');
    if (!databaseUrl) throw new RestorePlanError('DATABASE_URL (the server restored here) is required');
    // The directory stopped and replaced must be DATABASE_URL's server's (never a replica's).
    const proved = await proveDataDirectory({
      pgData,
      databaseUrl,
      pgBin,
      osUser,
      stanzaSystemId: info.systemId,
      allowStandby: args.allowStandby,
    });
    say(`data directory: ${proved}`);
    // WAL this server wrote that never reached the archive (archiving failing) is lost by a restore
    // to the end of the archive: refused unless the operator accepts that loss.
    const grace = unarchivedGraceSeconds();
    const unarchived = plan.target.type === 'end_of_archive' ? await unarchivedWal(pgData, osUser, grace * 1000) : [];
    if (unarchived.length > 0) {
      const what = `this server holds ${unarchived.length} WAL segment(s) not yet in the archive (oldest ${unarchived[0]}, waiting over ${grace} s: archiving is failing or stuck)`;
      if (!args.discardUnarchived)
        throw new RestorePlanError(
          `${what}: a restore to the end of the archive would lose every write in them. Fix archiving and wait until they are archived (GET /admin/backups: archiving), or accept the loss with --discard-unarchived; nothing was changed`,
        );
      say(`archive: ${what}; --discard-unarchived: they will be lost`);
    }
    if (args.dryRun) {
      say('dry run: nothing was changed');
      return 0;
    }
    const restoreApi = api();
    reporter = startReporter();
    const restoreStarted = performance.now();
    const done: { step: (typeof RESTORE_STEPS)[number]; ms: number }[] = [];
    reporter.report({
      event: 'started',
      at: new Date().toISOString(),
      result: 'success',
      plan: { backup: plan.backup.label, target: plan.target },
    });
    const finished = (result: 'success' | 'failed', error?: string) =>
      reporter!.report({
        event: 'finished',
        at: new Date().toISOString(),
        result,
        durationMs: Math.round(performance.now() - restoreStarted),
        steps: [...done],
        ...(error ? { error: error.slice(0, 500) } : {}),
      });
    let result: Awaited<ReturnType<typeof runRestore>>;
    try {
      result = await runRestore(
        {
          tool,
          api: restoreApi,
          server: restoreServer(
            pgData,
            pgBin,
            osUser,
            databaseUrl,
            undefined,
            plan.target.type === 'end_of_archive' && !args.discardUnarchived,
          ),
          pgData,
          promoteTimeoutMs: 3600_000,
          onStep: (t) => {
            const step = t.step as (typeof RESTORE_STEPS)[number];
            say(t.error === undefined ? `step: ${t.step} ${t.ms} ms` : `step: ${t.step} failed after ${t.ms} ms`);
            if (t.error === undefined) done.push({ step, ms: t.ms });
            reporter!.report({
              event: 'step',
              step,
              at: new Date().toISOString(),
              durationMs: t.ms,
              result: t.error === undefined ? 'success' : 'failed',
              ...(t.error ? { error: t.error.slice(0, 500) } : {}),
            });
          },
        },
        plan,
      );
    } catch (err) {
      finished('failed', errorMessage(err));
      if (done.some((d) => d.step === 'stop PostgreSQL')) {
        process.stderr.write(`restore failed: ${errorMessage(err)}\n`);
        for (const line of afterFailure(
          plan,
          pgData,
          done.map((d) => d.step),
        ))
          say(line);
        await finishReporting(reporter);
        return 1;
      }
      throw err;
    }
    finished(
      result.ok ? 'success' : 'failed',
      result.ok ? undefined : 'the restored primary did not pass the verification through the API',
    );
    say(`verify: ${JSON.stringify(result.verification)}`);
    say(
      result.ok
        ? 'primary: the restored primary passed the verification (connect, canary write, migrations)'
        : `primary: the restored primary did NOT pass the verification (${primaryVerified(result.verification).failed.join('; ')})`,
    );
    say(await replicaVerdict(restoreApi, result.verification));
    if (plan.target.type !== 'end_of_archive') {
      const stores = mediaStores();
      if (!stores) say('media: not configured here (MEDIA_* unset); run the media consistency pass where it is');
      else {
        let orphans;
        try {
          orphans = await findObjectsWithoutMetadata(databaseUrl, stores);
        } catch (err) {
          throw new Error(
            `the database restore succeeded, but the media consistency pass failed (${(err as Error).message}): objects uploaded after the target are not listed yet`,
          );
        } finally {
          for (const store of stores.values()) store.close();
        }
        say(`media: ${orphans.length} object(s) uploaded after the target have content but no metadata: keep (re-upload) or remove them`);
        for (const o of orphans) say(`media-orphan: ${JSON.stringify(o)}`);
      }
    }
    await finishReporting(reporter);
    say(
      `total: ${Math.round(performance.now() - started)} ms; read-only mode is still ON: check, then scripts/dr/disable-readonly-mode.sh`,
    );
    return result.ok ? 0 : 1;
  } catch (err) {
    if (reporter) await finishReporting(reporter);
    process.stderr.write(`restore failed: ${errorMessage(err)}\n`);
    return 1;
  }
}

/** How long the end of a restore waits for the replica to stream from the restored primary. */
const replicaWaitMs = () => {
  const v = Number(process.env.SAV3_REPLICA_WAIT_SECONDS ?? 30);
  return Number.isFinite(v) && v >= 0 ? v * 1000 : 30_000;
};

/**
 * One line saying whether the replica follows the restored primary (streams from it on its
 * timeline) or must be rebuilt. A replica reconnects within seconds when it can follow, so the
 * verification is repeated for up to SAV3_REPLICA_WAIT_SECONDS before the answer is "rebuild";
 * the exit code never depends on it.
 */
async function replicaVerdict(restoreApi: { verifyOnce(): Promise<VerifyReport | string> }, first: VerifyReport): Promise<string> {
  let replica = replicaOf(first);
  const deadline = Date.now() + replicaWaitMs();
  while (replica.configured && !replica.follows && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 3000));
    const again = await restoreApi.verifyOnce();
    if (typeof again !== 'string') replica = replicaOf(again);
  }
  if (!replica.configured) return 'replica: none configured in the API (no DATABASE_REPLICA_URL): nothing follows the restored primary yet';
  if (replica.follows) return `replica: FOLLOWS the restored primary (${replica.why})`;
  return `replica: MUST BE REBUILT: it does not follow the restored primary (${replica.why}) and must never be promoted as it is; on its host: scripts/dr/rebuild-primary.sh --pgdata <its data directory> --source '<the restored primary>' --confirm`;
}

/** What the operator must know and do when a restore failed after PostgreSQL was stopped. */
export function afterFailure(
  plan: { backup: { label: string }; target: { type: string }; timeline?: number },
  pgData: string,
  done: string[],
  state: ReturnType<typeof dataDirState> = dataDirState(pgData),
): string[] {
  // The timeline this run followed: a rerun on a directory whose control file is gone cannot read it.
  const timeline = plan.timeline !== undefined ? ` --timeline ${plan.timeline}` : '';
  const restored = done.includes('pgbackrest restore');
  // A restore killed or failed halfway has already replaced part of the directory and removed its
  // control file: PostgreSQL cannot start on it, only another restore brings it back.
  const startable = !restored && state === 'intact';
  if (done.includes('wait for promotion'))
    return [
      `outcome: FAILED. PostgreSQL on this host was restored from backup ${plan.backup.label} and promoted (it is UP), but it was not verified through the API; read-only mode is still ON (writes answer 503).`,
      'next: check the API and the database: scripts/dr/verify-database-restore.sh',
      'next: when the verification passes: scripts/dr/disable-readonly-mode.sh',
    ];
  return [
    'outcome: FAILED. PostgreSQL on this host is DOWN and read-only mode is still ON (writes answer 503).',
    restored
      ? `state: ${pgData} holds backup ${plan.backup.label} with recovery settings for a target PostgreSQL did not reach; the data it held before was replaced (delta restore).`
      : state === 'intact'
        ? `state: ${pgData} was not restored (${done.at(-1) ?? 'nothing'} was the last step done) and its control file (global/pg_control) is in place; starting PostgreSQL brings back the data it held.`
        : state === 'unreadable'
          ? `state: ${pgData} was not restored to the end (${done.at(-1) ?? 'nothing'} was the last step done) and cannot be read from here: without global/pg_control PostgreSQL cannot start on it (an interrupted pgBackRest restore): then restore again.`
          : state === 'interrupted_restore'
            ? `state: ${pgData} holds an interrupted pgBackRest restore: part of it was replaced and its control file (global/pg_control) is gone, so PostgreSQL cannot start on it; restore again (the restore below takes it).`
            : `state: ${pgData} holds no control file (global/pg_control): PostgreSQL cannot start on it; restore again.`,
    `next: look first: scripts/dr/restore-database.sh --from-backup <label> [--target-time T | --target-name N]${timeline} --dry-run`,
    `next: then restore to the end of the archive (loses nothing archived): scripts/dr/restore-database.sh --from-backup ${plan.backup.label}${timeline} --confirm`,
    startable ? `next: or start it as it was: pg_ctl -D ${pgData} start` : '',
    'next: when the verification passes: scripts/dr/disable-readonly-mode.sh',
  ].filter(Boolean);
}

/** Reports go to the API in the background, recorded first in a journal on this host. */
function startReporter(): RestoreReporter {
  const restoreId = randomUUID();
  const dir = journalDir();
  let journal: RestoreJournal | undefined;
  try {
    journal = RestoreJournal.open(dir, restoreId);
  } catch (err) {
    say(`report: cannot create the journal directory ${dir} (${(err as Error).message}); reports are kept in memory only`);
  }
  const earlier = RestoreJournal.all(dir)
    .filter((j) => j.restoreId !== restoreId)
    .reduce((n, j) => n + j.pending().length, 0);
  if (earlier > 0)
    say(
      `report: ${earlier} report(s) of earlier restores were never taken by the API: send them with scripts/dr/restore-database.sh --report-pending`,
    );
  say(`report: restore ${restoreId} reports to the API as database.restore${journal ? ` (journal ${journal.path})` : ''}`);
  return new RestoreReporter({ restoreId, transport: httpTransport(apiBase(), apiToken()), journal, say });
}

async function finishReporting(reporter: RestoreReporter): Promise<void> {
  const left = await reporter.flush(REPORT_FLUSH_MS);
  if (left === 0)
    say(
      `report: the API took all ${reporter.sent} report(s) of restore ${reporter.restoreId}${reporter.rejected ? ` (${reporter.rejected} refused)` : ''}`,
    );
  else
    say(
      `report: the API did not take ${left} report(s) of restore ${reporter.restoreId} (${reporter.lastError}); they are recorded in ${journalDir()}: send them with scripts/dr/restore-database.sh --report-pending`,
    );
}

/** Sends what earlier restores could not report; exit 0 when nothing is left unsent. */
async function reportPending(): Promise<number> {
  let token: string;
  try {
    token = apiToken();
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }
  const dir = journalDir();
  let left = 0;
  let found = 0;
  for (const journal of RestoreJournal.all(dir)) {
    const pending = journal.pending();
    if (pending.length === 0) continue;
    found += pending.length;
    const reporter = new RestoreReporter(
      { restoreId: journal.restoreId, transport: httpTransport(apiBase(), token), journal, say, resending: true },
      pending,
    );
    const remaining = await reporter.flush(REPORT_FLUSH_MS);
    left += remaining;
    say(
      `report: restore ${journal.restoreId}: ${reporter.sent} sent, ${reporter.rejected} refused, ${remaining} still unsent${remaining ? ` (${reporter.lastError})` : ''}`,
    );
  }
  if (found === 0) say(`report: nothing to send (${dir})`);
  return left === 0 ? 0 : 1;
}

if (require.main === module) {
  runMain(() => main(process.argv.slice(2)), 'restore failed');
}
