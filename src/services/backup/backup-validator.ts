import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { readMigrations } from '../database/migrator.ts';
import type { Logger } from '../../logger.ts';
import { runAs } from './os-command.ts';
import type { BackupTool, StanzaInfo } from './pgbackrest.ts';
import { freePort } from '../../adapters/net.ts';
import { ScratchCluster, scratchName } from './scratch-cluster.ts';
import { archiveContinuity, describeGap, replayFrom, scanArchive, type WalArchiveSource, type WalScan } from './wal-scan.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { recoverable } from './recoverable.ts';

export interface ValidationCheck {
  name: string;
  ok: boolean;
  /** The check could not prove anything (nothing to check, not configured): `detail` says why; never a pass. */
  skipped?: true;
  detail: string;
  ms: number;
  data?: unknown;
}

/**
 * The media check of a validation: metadata sampled from the restored database, looked up in the
 * backup bucket. A port, so the media metadata layout can change without touching validation.
 */
export interface MediaBackupCheck {
  check(restoredDatabaseUrl: string): Promise<Omit<ValidationCheck, 'ms'>>;
}

export interface ValidationInput {
  backup: string;
  targetTime?: string;
}

export interface ValidationReport {
  id: string;
  /**
   * `refused`: the target time is not in the archived WAL (recovery could not reach it); nothing
   * was restored and the backup was not judged.
   */
  status: 'passed' | 'failed' | 'refused';
  backup: { label: string; type: string; stoppedAt: string } | null;
  target: { type: 'time' | 'end_of_archive'; value: string | null };
  checks: ValidationCheck[];
  timings: { restoreMs: number | null; recoveryMs: number | null; checksMs: number | null; teardownMs: number | null; totalMs: number };
  bytes: number | null;
  startedAt: string;
  finishedAt: string;
}

export interface ValidationReportStore {
  save(report: ValidationReport, meta: { jobId: string; instanceId: string }): Promise<void>;
}

export interface ValidatorDeps {
  tool: BackupTool;
  /** The archived WAL, read before a point-in-time validation (pgBackRest repo-ls and archive-get). */
  walSource?: WalArchiveSource;
  /** Bound on that read; 300 s by default. */
  walScanTimeoutMs?: number;
  /** Tests replace the WAL read; scanArchive by default. */
  scan?: typeof scanArchive;
  info: () => Promise<StanzaInfo>;
  /**
   * The timeline the active primary is on now: recovery follows it (recovery_target_timeline), not
   * the archive's newest (an abandoned promotion) nor one a missing history file stops at.
   * Undefined (not given, or unknown): PostgreSQL's 'latest', and newer timelines fail the check.
   */
  liveTimeline?: () => Promise<number | undefined>;
  media: MediaBackupCheck | undefined;
  validationStore: ValidationReportStore;
  pgBin: string;
  osUser: string;
  scratchRoot: string;
  /** Data directories of live servers on this host: a restore never goes there. */
  liveDataDirs: () => Promise<string[]>;
  databaseName: string;
  databaseUser: string;
  migrationsDir: string;
  instanceId: string;
  logger: Logger;
  /** Bounds: the restore, and recovery up to the target. */
  restoreTimeoutMs: number;
  recoveryTimeoutMs: number;
  onTimings?: (timings: ValidationReport['timings']) => void;
}

/**
 * A non-destructive validation restore: restore a backup into a scratch directory, start it on a
 * spare port with archiving off, recover to the target and promote, check it, throw it away.
 */
export class BackupValidator {
  constructor(private readonly deps: ValidatorDeps) {}

  async validate(input: ValidationInput, jobId: string): Promise<ValidationReport> {
    const started = Date.now();
    const checks: ValidationCheck[] = [];
    const timings: ValidationReport['timings'] = { restoreMs: null, recoveryMs: null, checksMs: null, teardownMs: null, totalMs: 0 };
    const info = await this.deps.info();
    // latest: the newest backup recovery can start from with this archive (one on a branch a
    // point-in-time restore abandoned, or whose own WAL the archive lacks, is skipped); a label is
    // validated whatever its recovery says, and fails with it.
    const backup = input.backup === 'latest' ? info.backups.filter(recoverable).at(-1) : info.backups.find((b) => b.label === input.backup);
    const report: ValidationReport = {
      id: randomUUID(),
      status: 'failed',
      backup: backup ? { label: backup.label, type: backup.type, stoppedAt: backup.stoppedAt } : null,
      target: { type: input.targetTime ? 'time' : 'end_of_archive', value: input.targetTime ?? null },
      checks,
      timings,
      bytes: null,
      startedAt: new Date(started).toISOString(),
      finishedAt: '',
    };
    let cluster: ScratchCluster | undefined;
    const timeline = await this.deps.liveTimeline?.().catch(() => undefined);
    try {
      if (!backup)
        throw new Error(input.backup === 'latest' ? noRecoverableBackup(info) : `backup ${input.backup} is not in the repository`);
      if (input.targetTime) {
        const target = await timed('target', () => this.checkTarget(backup, input.targetTime!, timeline));
        checks.push(target);
        // Nothing restored: the outcome is `refused`, stored like any report.
        if (!target.ok) return await this.finish(report, started, jobId);
      } else {
        // To the end of the archive: a hole in it ends recovery early without an error, so the
        // restore below would "pass" on less data than was archived.
        let unrecoverable = false;
        const continuity = await timed('wal_continuity', async () => {
          const found = await this.checkContinuity(backup, timeline);
          unrecoverable = found.unrecoverable;
          return found.check;
        });
        checks.push(continuity);
        // On an abandoned branch, or without its own WAL, recovery cannot succeed: not restored
        // (the report fails with the reason, as a restore would after minutes or hours).
        if (!continuity.ok && unrecoverable) return await this.finish(report, started, jobId);
      }
      cluster = ScratchCluster.prepare(this.deps.scratchRoot, scratchName(jobId.slice(0, 8)), await freePort(), {
        ...this.deps,
        liveDataDirs: await this.deps.liveDataDirs(),
      });
      const restoreStart = Date.now();
      await this.deps.tool.restore(
        {
          pgPath: cluster.dataDir,
          set: backup.label,
          target: input.targetTime ? { type: 'time', value: input.targetTime } : undefined,
          targetAction: 'promote',
          archiveMode: 'off',
          ...(timeline !== undefined ? { targetTimeline: timeline } : {}),
        },
        this.deps.restoreTimeoutMs,
      );
      timings.restoreMs = Date.now() - restoreStart;
      report.bytes = cluster.bytes();
      checks.push({
        name: 'restore',
        ok: true,
        detail: `restored ${backup.label} (${report.bytes} bytes) in ${timings.restoreMs} ms`,
        ms: timings.restoreMs,
      });
      cluster.configure();

      const recoveryStart = Date.now();
      const recovered = await this.recover(cluster);
      timings.recoveryMs = Date.now() - recoveryStart;
      checks.push({ ...recovered, ms: timings.recoveryMs });
      if (!recovered.ok) throw new Error(recovered.detail);

      const checksStart = Date.now();
      const url = cluster.url(this.deps.databaseName, this.deps.databaseUser);
      checks.push(await timed('newest_commit', () => this.newestCommit(cluster!, input.targetTime)));
      checks.push(await timed('amcheck', () => this.amcheck(cluster!)));
      checks.push(await timed('migrations', () => this.migrations(url)));
      checks.push(await timed('tables', () => this.tables(url)));
      if (this.deps.media) checks.push(await timed('media_backup_sample', () => this.deps.media!.check(url)));
      else checks.push({ name: 'media_backup_sample', ok: true, skipped: true, detail: 'skipped: no backup bucket configured', ms: 0 });
      timings.checksMs = Date.now() - checksStart;
    } catch (err) {
      if (!checks.some((c) => !c.ok)) checks.push({ name: 'restore', ok: false, detail: errorMessage(err), ms: Date.now() - started });
    } finally {
      if (cluster) {
        const teardownStart = Date.now();
        await cluster
          .destroy()
          .catch((err: unknown) => this.deps.logger.error({ err, dir: cluster!.dir }, 'could not remove a scratch cluster'));
        timings.teardownMs = Date.now() - teardownStart;
      }
    }
    return this.finish(report, started, jobId);
  }

  /** Sets the outcome and stores the report. */
  private async finish(report: ValidationReport, started: number, jobId: string): Promise<ValidationReport> {
    const { checks, timings } = report;
    report.status = checks.some((c) => c.name === 'target' && !c.ok)
      ? 'refused'
      : checks.length > 0 && checks.every((c) => c.ok)
        ? 'passed'
        : 'failed';
    timings.totalMs = Date.now() - started;
    report.finishedAt = new Date().toISOString();
    this.deps.onTimings?.(timings);
    try {
      await this.deps.validationStore.save(report, { jobId, instanceId: this.deps.instanceId });
    } catch (err) {
      // The report was computed: it is kept in the job's result. The store's own message (Prisma:
      // source paths and code excerpts) goes to the log only, never to the job viewers read.
      this.deps.logger.error({ err, jobId, reportId: report.id }, 'could not store a validation report');
      throw Object.assign(
        new Error(
          `the validation ${report.status}, but its report could not be stored (${storeFailure(err)}); the report is in this job's result`,
        ),
        {
          report,
        },
      );
    }
    return report;
  }

  /**
   * Recovery to a time stops at the first commit after it; with none in the archived WAL,
   * PostgreSQL ends with "recovery ended before configured recovery target was reached" and a
   * good backup would be recorded as failed. So the WAL from the backup's first segment is read
   * first, as the restore script does: the target must not be after its newest commit.
   */
  private async checkTarget(
    backup: StanzaInfo['backups'][number],
    targetTime: string,
    timeline: number | undefined,
  ): Promise<Omit<ValidationCheck, 'ms'>> {
    const source = this.deps.walSource;
    const refuse = (detail: string, data?: unknown) => ({ name: 'target', ok: false, detail, ...(data ? { data } : {}) });
    if (!source || !backup.wal.start)
      return refuse(
        `the target ${targetTime} could not be checked against the archived WAL (no WAL source or start segment): not restored`,
      );
    let scan: WalScan;
    try {
      scan = await (this.deps.scan ?? scanArchive)(source, replayFrom(backup), {
        pgBin: this.deps.pgBin,
        osUser: this.deps.osUser,
        timeoutMs: this.deps.walScanTimeoutMs ?? 300_000,
        timeline,
      });
    } catch (err) {
      return refuse(`the target ${targetTime} could not be checked against the archived WAL: ${(err as Error).message}; not restored`);
    }
    if (scan.notChild) return refuse(`backup ${backup.label} cannot be recovered with this archive: ${scan.notChild}; not restored`);
    if (scan.gap?.withinBackup) return refuse(`${describeGap(scan.gap)}; not restored`, scan.gap);
    const data = { target: targetTime, newestArchivedCommit: scan.lastCommitAt, segments: scan.segments };
    if (!scan.lastCommitAt || Date.parse(scan.lastCommitAt) < Date.parse(targetTime))
      return refuse(
        `the target ${targetTime} is after the newest commit in the archived WAL (${scan.lastCommitAt ?? 'none after the backup'}): recovery cannot reach it; the backup was not restored nor judged (usable range ${backup.stoppedAt} to ${scan.lastCommitAt ?? backup.stoppedAt})`,
        data,
      );
    return {
      name: 'target',
      ok: true,
      detail: `the archived WAL holds commits up to ${scan.lastCommitAt} (${scan.segments} segment(s) read)`,
      data,
    };
  }

  /**
   * The archive's listing from the backup's first segment: continuous, or where the hole is;
   * `unrecoverable` when recovery cannot even make the backup consistent (an abandoned branch, a
   * hole in its own WAL).
   */
  private async checkContinuity(
    backup: StanzaInfo['backups'][number],
    timeline: number | undefined,
  ): Promise<{ check: Omit<ValidationCheck, 'ms'>; unrecoverable: boolean }> {
    const source = this.deps.walSource;
    if (!source || !backup.wal.start)
      return {
        check: { name: 'wal_continuity', ok: true, skipped: true, detail: 'skipped: no WAL source or start segment to list' },
        unrecoverable: false,
      };
    try {
      const replay = await archiveContinuity(source, replayFrom(backup), {
        timeoutMs: this.deps.walScanTimeoutMs ?? 300_000,
        osUser: this.deps.osUser,
        timeline,
      });
      const { segments, gap, notChild } = replay;
      if (notChild)
        return {
          check: {
            name: 'wal_continuity',
            ok: false,
            detail: `backup ${backup.label} cannot be recovered with this archive: ${notChild}; not restored`,
            data: { timeline: replay.timeline },
          },
          unrecoverable: true,
        };
      if (gap)
        return {
          check: { name: 'wal_continuity', ok: false, detail: `${describeGap(gap)}${gap.withinBackup ? '; not restored' : ''}`, data: gap },
          unrecoverable: gap.withinBackup,
        };
      // Followed as PostgreSQL's 'latest' (the live timeline unknown): newer timelines in the
      // archive would never be replayed (a history file missing), everything on them lost.
      if (timeline === undefined && (replay.newerTimelines.length > 0 || replay.abandonedSegments > 0))
        return {
          check: {
            name: 'wal_continuity',
            ok: false,
            detail: `the active primary's timeline is unknown and the archive holds more than one branch after the backup (${replay.newerTimelines.length > 0 ? `timeline(s) ${replay.newerTimelines.join(', ')} newer than ${replay.timeline}` : `${replay.abandonedSegments} segment(s) on timelines ${replay.timeline}'s history left`}): recovery might follow another branch than the live one`,
            data: { timeline: replay.timeline, newerTimelines: replay.newerTimelines },
          },
          unrecoverable: false,
        };
      return {
        check: {
          name: 'wal_continuity',
          ok: true,
          detail: `the archived WAL is continuous from ${backup.wal.start} on timeline ${replay.timeline}'s history (${segments.length} segment(s))`,
        },
        unrecoverable: false,
      };
    } catch (err) {
      return {
        check: { name: 'wal_continuity', ok: false, detail: `the archived WAL could not be listed: ${errorMessage(err)}` },
        unrecoverable: false,
      };
    }
  }

  /** Starts the restored cluster and waits until recovery reached its target and it promoted. */
  private async recover(cluster: ScratchCluster): Promise<Omit<ValidationCheck, 'ms'>> {
    const deadline = Date.now() + this.deps.recoveryTimeoutMs;
    try {
      await cluster.start(this.deps.recoveryTimeoutMs);
    } catch (err) {
      return {
        name: 'recovery',
        ok: false,
        detail: `the restored server did not start: ${lastLines(cluster.log()) || (err as Error).message}`,
      };
    }
    while (Date.now() < deadline) {
      try {
        const inRecovery = await query<{ r: boolean }>(cluster.url('postgres', this.deps.databaseUser), 'SELECT pg_is_in_recovery() AS r');
        if (inRecovery[0]?.r === false)
          return { name: 'recovery', ok: true, detail: 'recovery reached its target and the server promoted' };
      } catch {
        // the server stops if recovery fails (e.g. the target is beyond the archive): seen below
      }
      if (
        /FATAL|PANIC/.test(cluster.log()) &&
        /recovery ended before|could not locate|shut down|database system is shut down/.test(cluster.log())
      ) {
        return { name: 'recovery', ok: false, detail: `recovery failed: ${lastLines(cluster.log())}` };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return { name: 'recovery', ok: false, detail: `recovery did not finish within ${this.deps.recoveryTimeoutMs} ms` };
  }

  private async newestCommit(cluster: ScratchCluster, targetTime?: string): Promise<Omit<ValidationCheck, 'ms'>> {
    const rows = await query<{ at: Date | null }>(
      cluster.url('postgres', this.deps.databaseUser),
      'SELECT pg_last_xact_replay_timestamp() AS at',
    );
    const at = rows[0]?.at ?? null;
    if (!targetTime)
      return {
        name: 'newest_commit',
        ok: true,
        detail: at ? `newest commit recovered: ${at.toISOString()}` : 'no transaction replayed after the backup',
        data: { newestCommit: at?.toISOString() ?? null },
      };
    const target = Date.parse(targetTime);
    const ok = at === null || at.getTime() <= target;
    const gapMs = at ? target - at.getTime() : null;
    return {
      name: 'newest_commit',
      ok,
      detail: at
        ? `newest commit ${at.toISOString()}, ${gapMs} ms before the target ${targetTime}`
        : 'no transaction replayed between the backup and the target',
      data: { newestCommit: at?.toISOString() ?? null, target: targetTime, gapMs },
    };
  }

  private async amcheck(cluster: ScratchCluster): Promise<Omit<ValidationCheck, 'ms'>> {
    try {
      // Every database: heap and btree checks; amcheck is installed in the scratch cluster only.
      await runAs(
        this.deps.osUser,
        join(this.deps.pgBin, 'pg_amcheck'),
        [
          '-h',
          cluster.dir,
          '-p',
          String(cluster.port),
          '-U',
          this.deps.databaseUser,
          '--all',
          '--install-missing',
          '--no-strict-names',
          '--jobs=2',
        ],
        {
          timeoutMs: this.deps.recoveryTimeoutMs,
        },
      );
      return { name: 'amcheck', ok: true, detail: 'pg_amcheck --all: heap and btree clean in every database' };
    } catch (err) {
      const e = err as { stdout?: string; message: string };
      return {
        name: 'amcheck',
        ok: false,
        detail: `pg_amcheck found problems: ${(e.stdout ?? '').split('\n').slice(0, 10).join(' ') || e.message}`.slice(0, 1000),
      };
    }
  }

  private async migrations(url: string): Promise<Omit<ValidationCheck, 'ms'>> {
    const expected = await readMigrations(this.deps.migrationsDir);
    let applied: { migration_name: string; checksum: string }[];
    try {
      applied = await query(
        url,
        'SELECT migration_name, checksum FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name',
      );
    } catch (err) {
      return { name: 'migrations', ok: false, detail: `_prisma_migrations is not readable: ${(err as Error).message}` };
    }
    const have = new Map(applied.map((m) => [m.migration_name, m.checksum]));
    const missing = expected.filter((m) => !have.has(m.name)).map((m) => m.name);
    const changed = expected.filter((m) => have.has(m.name) && have.get(m.name) !== m.checksum).map((m) => m.name);
    const unknown = applied.filter((a) => !expected.some((m) => m.name === a.migration_name)).map((a) => a.migration_name);
    const ok = missing.length === 0 && changed.length === 0 && unknown.length === 0;
    return {
      name: 'migrations',
      ok,
      detail: ok
        ? `all ${expected.length} migrations of the code are applied`
        : `missing ${missing.join(', ') || 'none'}; changed ${changed.join(', ') || 'none'}; unknown ${unknown.join(', ') || 'none'}`,
      data: { expected: expected.length, applied: applied.length, missing, changed, unknown },
    };
  }

  private async tables(url: string): Promise<Omit<ValidationCheck, 'ms'>> {
    const client = new pg.Client({ connectionString: url, statement_timeout: this.deps.recoveryTimeoutMs });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const { rows } = await client.query<{ schema: string; name: string }>(
        "SELECT schemaname AS schema, tablename AS name FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
      );
      const counts: Record<string, number> = {};
      const unreadable: string[] = [];
      for (const t of rows) {
        const ident = `${client.escapeIdentifier(t.schema)}.${client.escapeIdentifier(t.name)}`;
        try {
          const r = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${ident}`);
          counts[`${t.schema}.${t.name}`] = Number(r.rows[0]!.n);
        } catch (err) {
          unreadable.push(`${t.schema}.${t.name}: ${(err as Error).message}`);
        }
      }
      return {
        name: 'tables',
        ok: unreadable.length === 0 && rows.length > 0,
        detail: unreadable.length ? `unreadable: ${unreadable.join('; ')}` : `${rows.length} tables readable`,
        data: { rows: counts },
      };
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

async function timed(name: string, fn: () => Promise<Omit<ValidationCheck, 'ms'>>): Promise<ValidationCheck> {
  const start = Date.now();
  try {
    return { ...(await fn()), ms: Date.now() - start };
  } catch (err) {
    return { name, ok: false, detail: (err as Error).message, ms: Date.now() - start };
  }
}

async function query<T>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, statement_timeout: 60_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query(sql)).rows as T[];
  } finally {
    await client.end().catch(() => undefined);
  }
}

function lastLines(log: string): string {
  return log
    .split('\n')
    .filter((l) => /FATAL|PANIC|ERROR/.test(l))
    .slice(-3)
    .join(' ')
    .slice(0, 600);
}

/** Why a store refused, in words fit for a job record (no message, stack or path of the driver). */
export function storeFailure(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const c = typeof code === 'string' ? code : '';
  if (/^P10(01|02|08|17)$/.test(c) || /^(ECONNREFUSED|ETIMEDOUT|ECONNRESET|57P01|57P03|08\w{3})$/.test(c))
    return 'the database is unreachable';
  if (/^P2\d{3}$/.test(c) || /^(23|42)\w{3}$/.test(c)) return `the database refused it: ${c}`;
  return 'the database did not accept it';
}

/** Why `latest` names no backup: none at all, or none recovery can start from with this archive (each one's reason). */
function noRecoverableBackup(info: StanzaInfo): string {
  const good = info.backups.filter((b) => !b.error);
  if (good.length === 0) return 'the repository holds no successful backup';
  return `no backup in the repository can be recovered with this archive: ${good.map((b) => `${b.label}: ${b.recovery?.problem ?? 'unknown'}`).join('; ')}`;
}
