import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Redis } from 'ioredis';
import { createBackupModule, type BackupModule } from './modules/backup-module.ts';
import { VALIDATE_JOB } from './services/backup/backup-service.ts';
import type { BackupTool } from './services/backup/pgbackrest.ts';
import { cleanLeftovers } from './services/backup/scratch-cluster.ts';
import { stopAllPgBackRest } from './services/backup/pgbackrest.ts';
import type { Config } from './config/config.ts';
import { DatabaseClients, createPrisma } from './adapters/database-clients.ts';
import { RedisDrStateStore } from './services/dr-state/dr-state-store.ts';
import { errorMiddleware, methodNotAllowed, notFoundHandler } from './http/error-middleware.ts';
import { IntervalSchedule } from './services/jobs/validation-schedule.ts';
import { JobRunner, type JobHandler } from './services/jobs/job-runner.ts';
import { Lifecycle } from './lifecycle/lifecycle.ts';
import type { Logger } from './logger.ts';
import { createObjectStores } from './adapters/object-stores.ts';
import { httpMetrics } from './metrics/http-metrics.ts';
import { createMetrics, type Metrics } from './metrics/metrics.ts';
import { metricsRoutes } from './routes/metrics-routes.ts';
import { closeRedis, createRedisClient, isReady, waitReady } from './adapters/redis-client.ts';
import { MIGRATIONS_DIR } from './paths.ts';

export interface WorkerOptions {
  redisKeyPrefix?: string;
  /** Tests: further job kinds (e.g. to prove that each job runs once). */
  extraHandlers?: Map<string, JobHandler>;
  tool?: BackupTool;
  pollMs?: number;
}

export interface Worker {
  config: Config;
  metrics: Metrics;
  backups: BackupModule;
  runner: JobRunner;
  redis: Redis;
  listen(): Promise<AddressInfo>;
  stop(): Promise<void>;
}

/**
 * The background-jobs process: same code and configuration as the API, no API routes. It takes
 * DR jobs (backups, validation restores) from the shared queue and serves only its own health and
 * metrics on WORKER_PORT.
 */
export function createWorker(config: Config, logger: Logger, options: WorkerOptions = {}): Worker {
  const prefix = options.redisKeyPrefix ?? 'sav3:';
  const metrics = createMetrics();
  // Instance-state gauges belong to API instances: a worker exporting their zero values would
  // trip alerts that compare instances (e.g. DR state versions).
  for (const name of [
    'sav3_dr_state_version',
    'sav3_read_only_mode',
    'sav3_replication_lag_seconds',
    'sav3_media_backup_backlog',
    'sav3_media_backup_stuck',
    'sav3_media_backup_retired',
    'sav3_read_only_rejections_total',
  ]) {
    metrics.registry.removeSingleMetric(name);
  }
  const lifecycle = new Lifecycle();
  const redis = createRedisClient(config.redisUrl, logger, 'sav3-worker');
  const clients = new DatabaseClients({ primary: config.databaseUrl, replica: config.databaseReplicaUrl }, createPrisma);
  const stateStore = new RedisDrStateStore(redis, prefix);
  const objectStores = createObjectStores(config);
  // The worker follows the shared DR state for the active database (it never changes it).
  const activeTarget = async () => {
    const target = (await stateStore.read())?.database.active ?? 'primary';
    if (clients.active !== target) await clients.setActive(target, 0);
    return target;
  };
  const backups = createBackupModule({
    config,
    logger,
    metrics,
    redis,
    prefix,
    clients,
    activeTarget,
    stores: objectStores,
    migrationsDir: MIGRATIONS_DIR,
    tool: options.tool,
  });
  const handlers = new Map([...backups.handlers(), ...(options.extraHandlers ?? [])]);
  const runner = new JobRunner({
    queue: backups.queue,
    handlers,
    instanceId: config.backup.workerInstanceId,
    logger,
    pollMs: options.pollMs ?? config.backup.jobPollMs,
    onFinished: (job) => metrics.jobsTotal.inc({ kind: job.kind, result: job.status }),
  });
  const schedule = new IntervalSchedule({
    redis,
    key: `${prefix}schedule:${VALIDATE_JOB}`,
    intervalSeconds: config.backup.validateIntervalSeconds,
    checkMs: Math.min(60_000, Math.max(1000, (config.backup.validateIntervalSeconds * 1000) / 10)),
    logger,
    fire: async () => {
      await activeTarget().catch(() => undefined);
      const job = await backups.service.requestValidation({}, 'schedule');
      logger.info({ jobId: job.id }, 'scheduled backup validation queued');
    },
  });

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(httpMetrics(metrics));
  const send = (res: express.Response, ok: boolean, extra: Record<string, unknown> = {}) =>
    res
      .setHeader('Cache-Control', 'no-store')
      .status(ok ? 200 : 503)
      .json({ status: ok ? 'healthy' : 'unhealthy', ...extra, timestamp: new Date().toISOString() });
  app.get('/health/live', (_req, res) => send(res, !lifecycle.shuttingDown));
  app.get('/health/ready', async (_req, res) => {
    // Ready to take jobs: not stopping, and the queue (Redis) answers.
    // The queue's own connection: ready, and answering a PING within the health timeout.
    const redisOk =
      isReady(redis) &&
      (await Promise.race([
        redis.ping().then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((r) => setTimeout(() => r(false), config.healthTimeoutMs).unref()),
      ]));
    const ok = !lifecycle.shuttingDown && redisOk;
    send(res, ok, {
      checks: { lifecycle: lifecycle.shuttingDown ? 'unhealthy' : 'healthy', redis: redisOk ? 'healthy' : 'unhealthy' },
      role: 'worker',
    });
  });
  app.use(metricsRoutes(metrics.registry));
  app.use(methodNotAllowed(['/health/live', '/health/ready', '/metrics'].map((path) => ({ method: 'get', path }))));
  app.use(notFoundHandler);
  app.use(errorMiddleware);
  let server: Server | undefined;

  return {
    config,
    metrics,
    backups,
    runner,
    redis,
    async listen() {
      const removed = await cleanLeftovers(config.backup.scratchDir, { pgBin: config.backup.pgBin, osUser: config.backup.osUser }).catch(
        (err: unknown) => {
          logger.error({ err }, 'could not clean leftover scratch clusters');
          return [];
        },
      );
      if (removed.length > 0) logger.warn({ removed }, 'removed scratch clusters left by a worker that stopped mid-validation');
      await waitReady(redis, 2000);
      await activeTarget().catch(() => undefined);
      backups.start();
      await runner.announce().catch((err: unknown) => logger.warn({ err }, 'could not announce this worker (Redis)'));
      runner.start();
      schedule.start();
      server = app.listen(config.backup.workerPort, config.host);
      await new Promise<void>((resolve, reject) => server!.once('listening', resolve).once('error', reject));
      const address = server.address() as AddressInfo;
      logger.info({ port: address.port, instanceId: config.backup.workerInstanceId, jobs: [...handlers.keys()] }, 'worker listening');
      return address;
    },
    async stop() {
      lifecycle.shuttingDown = true;
      schedule.stop();
      backups.stop();
      // A job still running at the bound is abandoned: it is reported failed (stale) and its scratch
      // cluster is removed when a worker starts again.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([runner.stop(), new Promise((r) => (timer = setTimeout(r, config.shutdownTimeoutMs)))]);
      clearTimeout(timer);
      // pgBackRest still running for an abandoned job is stopped with it (its whole process group).
      const stopped = stopAllPgBackRest();
      if (stopped > 0) logger.warn({ stopped }, 'stopped pgBackRest runs of jobs abandoned at shutdown');
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      server?.closeAllConnections();
      await Promise.allSettled([clients.closeAll(), closeRedis(redis)]);
      for (const store of objectStores.values()) store.close();
      logger.info('worker stopped');
    },
  };
}
