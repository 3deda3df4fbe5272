import { readCurrentTimeline } from '../adapters/pg-connection.ts';
import type { Router } from 'express';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import type { DatabaseTarget, MediaBackendName } from '../domain.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DatabaseClients } from '../adapters/database-clients.ts';
import { DependencyUnavailableError } from '../http/app-error.ts';
import { JobQueue } from '../services/jobs/job-queue.ts';
import type { JobHandler } from '../services/jobs/job-runner.ts';
import type { Logger } from '../logger.ts';
import type { ObjectStore } from '../adapters/object-store.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { BackupInventory } from '../services/backup/backup-inventory.ts';
import { backupRoutes } from '../routes/backup-routes.ts';
import { jobRoutes } from '../routes/job-routes.ts';
import { JobLookup } from '../services/jobs/job-lookup.ts';
import { RedisJobRecords } from '../services/jobs/job-records.ts';
import { mediaJobView } from '../services/media/media-sync.ts';
import { RestoreLedger } from '../services/backup/restore-ledger.ts';
import { BACKUP_JOB, BackupService, VALIDATE_JOB, type BackupJobInput } from '../services/backup/backup-service.ts';
import { BackupValidator, type ValidationInput } from '../services/backup/backup-validator.ts';
import { BackupBucketMediaCheck } from '../services/backup/media-backup-check.ts';
import { isRoot } from '../services/backup/os-command.ts';
import { PgBackRestCli, type BackupTool } from '../services/backup/pgbackrest.ts';
import { PublishedBackupInfo } from '../services/backup/published-info.ts';
import { readArchiverStatus } from '../services/backup/wal-archive.ts';
import type { WalArchiveSource } from '../services/backup/wal-scan.ts';
import { lastPassedValidation, PrismaValidationStore } from '../services/backup/validation-store.ts';

export interface BackupModule {
  inventory: BackupInventory;
  queue: JobQueue;
  service: BackupService;
  validations: PrismaValidationStore;
  tool: BackupTool | undefined;
  /**
   * Admin routers (jobs of every kind, inventory, backups, validations); none without an audit log
   * (the worker).
   */
  adminRouters: Router[];
  /** What a worker runs (API instances never run these). */
  handlers(): Map<string, JobHandler>;
  start(): void;
  stop(): void;
}

/** Hours-long operations get their own bounds, not the info timeout. */
export const BACKUP_TIMEOUT_MS = 6 * 3600_000;

export function createBackupModule(deps: {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  redis: Redis;
  prefix: string;
  clients: DatabaseClients;
  /** The database target serving writes now (from the shared DR state). */
  activeTarget: () => Promise<DatabaseTarget>;
  stores: ReadonlyMap<MediaBackendName, ObjectStore>;
  migrationsDir: string;
  audit?: AuditLog;
  tool?: BackupTool;
}): BackupModule {
  const { config, logger, metrics } = deps;
  const b = config.backup;
  // With a stanza configured this process runs pgBackRest itself (the worker, or an API instance
  // on a host that has it); without one, an API instance reads what a worker published.
  const local =
    deps.tool ??
    (b.stanza
      ? new PgBackRestCli({ bin: b.bin, stanza: b.stanza, configPath: b.configPath, runAs: isRoot() ? b.osUser : undefined })
      : undefined);
  const tool: BackupTool | undefined =
    local ?? (deps.audit ? new PublishedBackupInfo(deps.redis, deps.prefix, Math.max(b.statusIntervalMs * 4, 60_000)) : undefined);
  // The archive itself (repo-ls, archive-get) where this process runs pgBackRest.
  const walSource = local && 'listSegments' in local && 'fetchSegment' in local ? (local as unknown as WalArchiveSource) : undefined;
  const activeUrl = async () => {
    const target = await deps.activeTarget().catch(() => 'primary' as const);
    return deps.clients.url(target) ?? config.databaseUrl;
  };
  // The timeline the active database is on now: recovery follows it (see BackupValidator.liveTimeline).
  const liveTimeline = async (): Promise<number | undefined> => readCurrentTimeline(await activeUrl(), config.healthTimeoutMs * 3);
  const validations = new PrismaValidationStore(() => deps.clients.client());
  // The inventory samples the running backup through the service (created below).
  let service: BackupService | undefined;
  const inventory = new BackupInventory({
    tool,
    walSource,
    liveTimeline,
    onInfo: local ? (info) => PublishedBackupInfo.publish(deps.redis, deps.prefix, info) : undefined,
    archiver: async () => readArchiverStatus(await activeUrl(), config.healthTimeoutMs * 3),
    lastValidation: async () => lastPassedValidation(await activeUrl(), config.healthTimeoutMs * 3),
    metrics,
    logger,
    timeoutMs: b.timeoutMs,
    cacheMs: b.infoCacheMs,
    intervalMs: b.statusIntervalMs,
    archiveStallMs: b.archiveStallMs,
    maxAgeSeconds: b.maxAgeSeconds,
    validationMaxAgeSeconds: b.validationMaxAgeSeconds,
    runningBackup: async () => service?.runningBackup(),
    runningMaxSeconds: b.runningMaxSeconds,
  });
  const queue = new JobQueue(deps.redis, deps.prefix);
  service = new BackupService({
    inventory,
    queue,
    activeDatabaseUrl: activeUrl,
    timeoutMs: Math.max(config.healthTimeoutMs, 2000),
    runningMaxSeconds: b.runningMaxSeconds,
  });
  const adminRouters = deps.audit
    ? [
        jobRoutes(
          new JobLookup({
            records: new RedisJobRecords(deps.redis, deps.prefix),
            media: mediaJobView,
            queue: (id, job) => service.job(id, job),
          }),
        ),
        backupRoutes({
          inventory,
          service,
          validations: safe(validations),
          audit: deps.audit,
          restores: new RestoreLedger({
            redis: deps.redis,
            prefix: deps.prefix,
            prisma: () => deps.clients.client(),
            dbTimeoutMs: Math.max(config.healthTimeoutMs, 1000),
          }),
        }),
      ]
    : [];

  const databaseUrl = new URL(config.databaseUrl);
  const backupStore = deps.stores.get('backup');
  const handlers = () => {
    const map = new Map<string, JobHandler>();
    const tool = local;
    if (!tool) return map;
    map.set(BACKUP_JOB, async (job) => {
      const input = job.input as BackupJobInput;
      const started = Date.now();
      await tool.backup(input.type, BACKUP_TIMEOUT_MS);
      inventory.invalidate();
      const info = await inventory.info(true);
      const newest = info.backups.at(-1);
      return { type: input.type, label: newest?.label ?? null, durationMs: Date.now() - started, backup: newest ?? null };
    });
    const validator = new BackupValidator({
      tool,
      liveTimeline,
      walSource,
      info: () => inventory.info(true),
      media: backupStore ? new BackupBucketMediaCheck(backupStore) : undefined,
      validationStore: validations,
      pgBin: b.pgBin,
      osUser: b.osUser,
      scratchRoot: b.scratchDir,
      liveDataDirs: async () => liveDataDirs([deps.clients.url('primary'), deps.clients.url('replica')]),
      databaseName: decodeURIComponent(databaseUrl.pathname.slice(1)) || 'postgres',
      databaseUser: decodeURIComponent(databaseUrl.username) || 'postgres',
      migrationsDir: deps.migrationsDir,
      instanceId: config.instanceId,
      logger,
      restoreTimeoutMs: BACKUP_TIMEOUT_MS,
      recoveryTimeoutMs: 3600_000,
      onTimings: (t) => {
        if (t.restoreMs !== null) metrics.backupRestoreSeconds.observe({ phase: 'restore' }, t.restoreMs / 1000);
        if (t.recoveryMs !== null) metrics.backupRestoreSeconds.observe({ phase: 'recovery' }, t.recoveryMs / 1000);
      },
    });
    map.set(VALIDATE_JOB, async (job) => {
      const report = await validator.validate(job.input as ValidationInput, job.id);
      void inventory.sample();
      if (report.status === 'refused')
        throw Object.assign(
          new Error(
            `validation refused, the backup was not judged: ${report.checks.find((c) => c.name === 'target')?.detail ?? 'the target cannot be reached'}`,
          ),
          { report },
        );
      if (report.status !== 'passed')
        throw Object.assign(
          new Error(
            `validation failed: ${report.checks
              .filter((c) => !c.ok)
              .map((c) => c.name)
              .join(', ')}`,
          ),
          { report },
        );
      return report;
    });
    return map;
  };

  return {
    inventory,
    queue,
    service,
    validations,
    tool,
    adminRouters,
    handlers,
    start: () => inventory.start(),
    stop: () => inventory.stop(),
  };
}

/** Data directories of the configured servers (as their superuser sees them), best effort. */
async function liveDataDirs(urls: (string | undefined)[]): Promise<string[]> {
  const pg = await import('pg');
  const dirs: string[] = [];
  for (const url of urls) {
    if (!url) continue;
    const client = new pg.default.Client({ connectionString: url, connectionTimeoutMillis: 2000, query_timeout: 2000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ d: string }>("SELECT current_setting('data_directory') AS d");
      if (rows[0]) dirs.push(rows[0].d);
    } catch {
      // not a superuser, or down: the scratch-root and PG_VERSION checks still apply
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  return dirs;
}

/** The validations list answers 503 (not 500) while the database is down. */
function safe(store: PrismaValidationStore): PrismaValidationStore {
  return Object.assign(Object.create(store) as PrismaValidationStore, {
    recent: async (limit: number) => {
      try {
        return await store.recent(limit);
      } catch (err) {
        throw new DependencyUnavailableError('database', 'validation reports are kept in the database, which did not answer', err);
      }
    },
  });
}
