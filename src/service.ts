import type { MediaBackendName } from './domain.ts';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import { buildApp } from './app.ts';
import type { Config } from './config/config.ts';
import { createPrisma, DatabaseClients, type PrismaFactory } from './adapters/database-clients.ts';
import { migrate } from './services/database/migrator.ts';
import { createDatabaseModule, type DatabaseModule } from './modules/database-module.ts';
import { HealthService } from './health/health-service.ts';
import { ProbeRunner } from './health/probe-runner.ts';
import { Lifecycle } from './lifecycle/lifecycle.ts';
import type { Logger } from './logger.ts';
import { RedisMediaCache } from './services/media/media-cache.ts';
import { PrismaMediaRepository } from './services/media/media-repository.ts';
import { MediaService } from './services/media/media-service.ts';
import { UploadSpool } from './services/media/upload-spool.ts';
import { VersionContentCache } from './services/media/version-content-cache.ts';
import { createMediaModule, type MediaModule } from './modules/media-module.ts';
import { MinioObjectStore } from './adapters/minio-object-store.ts';
import type { ObjectStore } from './adapters/object-store.ts';
import { createMetrics, type Metrics } from './metrics/metrics.ts';
import { createDrModule, type DrModule } from './dr-module.ts';
import { startMetricsListener } from './metrics/metrics-listener.ts';
import { createBackupModule, type BackupModule } from './modules/backup-module.ts';
import { createRedisClient } from './adapters/redis-client.ts';
import { fencedRepository } from './services/write-gate/fenced-repository.ts';
import { probeRedis } from './health/redis-probe.ts';
import { createIncidentsModule, type IncidentsModule } from './modules/incidents-module.ts';
import { warmUpPrisma } from './adapters/prisma-warm-up.ts';
import type { WebhookSender } from './services/incidents/notification-outbox.ts';

export const MIGRATIONS_DIR = join(__dirname, '..', 'prisma', 'migrations');

export interface ServiceOptions {
  /** Namespace for every Redis key, so tests (and several deployments) can share one Redis. */
  redisKeyPrefix?: string;
  prismaFactory?: PrismaFactory;
  /** Benchmarks only: build the app without the read-only middleware, to measure what it costs. */
  withoutReadOnlyGuard?: boolean;
  /** Incidents: the webhook sender (tests) and outbox timing. */
  notifySender?: WebhookSender;
  outboxPollMs?: number;
  outboxBackoffMs?: number;
  incidentChecksMs?: number;
}

/** Everything one running instance holds; built only here (the composition root). */
export interface Service {
  config: Config;
  app: Express;
  metrics: Metrics;
  lifecycle: Lifecycle;
  health: HealthService;
  database: DatabaseClients;
  stores: Map<MediaBackendName, ObjectStore>;
  redis: Redis;
  dr: DrModule;
  db: DatabaseModule;
  media: MediaModule;
  backups: BackupModule;
  incidents: IncidentsModule;
  listen(): Promise<AddressInfo>;
  /** Graceful stop: readiness 503, stop accepting, drain within the bound, close every client. */
  stop(): Promise<void>;
}

export async function createService(config: Config, logger: Logger, options: ServiceOptions = {}): Promise<Service> {
  if (config.migrateOnStart) {
    const result = await migrate(config.databaseUrl, MIGRATIONS_DIR);
    logger.info({ applied: result.applied, restorePoint: result.restorePoint }, 'migrations applied');
  }
  const prefix = options.redisKeyPrefix ?? 'sav3:';
  const metrics = createMetrics();
  const lifecycle = new Lifecycle();
  const database = new DatabaseClients({ primary: config.databaseUrl, replica: config.databaseReplicaUrl }, options.prismaFactory ?? createPrisma);
  const redis = createRedisClient(config.redisUrl, logger, 'sav3-api');

  const stores = new Map<MediaBackendName, ObjectStore>();
  const storeOptions = { timeoutMs: config.mediaS3TimeoutMs, poolSize: config.mediaS3PoolSize };
  stores.set('primary', new MinioObjectStore(config.mediaPrimary, storeOptions));
  if (config.mediaBackup) stores.set('backup', new MinioObjectStore(config.mediaBackup, storeOptions));
  const dr = createDrModule({ config, logger, metrics, redis, prefix, prisma: () => database.client() });
  const db = createDatabaseModule({ config, clients: database, dr, metrics, logger, migrationsDir: MIGRATIONS_DIR });
  dr.admin.routers.push(...db.routers);
  dr.addWriteRefusal(() => db.watch.writeRefusal());
  // A read-only TTL lifts the mode only onto a target verified writable by a fresh probe.
  dr.setLiftCheck(async () => {
    await db.runners.get(dr.state.current().database.active)?.run();
    return db.watch.verifiedWritable();
  });
  const activeMedia = () => dr.state.current().media.active;

  const timeoutMs = config.healthTimeoutMs;
  const probeOptions = (dependency: string, target: () => string) => ({ dependency, target, timeoutMs, metrics, logger });
  const mediaRunners = new Map<MediaBackendName, ProbeRunner<void>>();
  for (const [name, store] of stores) {
    mediaRunners.set(name, new ProbeRunner((signal) => store.checkBucket(timeoutMs, signal), probeOptions('media', () => name)));
  }
  const redisRunner = new ProbeRunner<void>((signal) => probeRedis(config.redisUrl, timeoutMs, signal), probeOptions('redis', () => 'redis'));

  // Reads skip a backend whose latest background probe failed (no 30 s wait on a dead store).
  const backendDown = (backend: MediaBackendName) => mediaRunners.get(backend)?.latest()?.ok === false;
  const spool = new UploadSpool({ maxConcurrent: config.mediaSpoolMaxConcurrent, maxBytes: config.mediaSpoolMaxBytes });
  const mediaSaturated = () => {
    const pools = [...stores].flatMap(([name, store]) => store.saturated().map((pool) => `${name}.${pool}`));
    if (spool.full) pools.push('spool');
    return pools;
  };

  const health = new HealthService({
    database: { runners: db.runners, active: () => database.active },
    replication: async () => db.replication() as Record<string, unknown> | undefined,
    media: { runners: mediaRunners, active: activeMedia, bucket: (b) => stores.get(b)?.bucket ?? '', saturated: mediaSaturated },
    redis: redisRunner,
    drSummary: () => ({ readOnly: dr.readOnly.isActive(), stateVersion: dr.state.current().version, ttlExpiryRefused: dr.readOnly.expiryRefused() }),
    writes: () => {
      const nodes = db.watch.report();
      return { refusal: dr.gate.closed(), splitBrain: nodes.splitBrain, writableNodes: nodes.writableNodes, fenced: nodes.fenced };
    },
    lifecycle,
    intervalMs: config.healthIntervalMs,
    timeoutMs,
  });

  const cache = new RedisMediaCache(redis, prefix, config.mediaCacheTtlSeconds);
  const mediaModule = createMediaModule({ config, stores, cache, dr, redis, prefix, prisma: () => database.client(), backendDown, metrics, logger });
  dr.admin.routers.push(...mediaModule.routers);
  const media = new MediaService({
    // Writes go to the active target; reads outside a write may go to a target that answers.
    repository: fencedRepository(new PrismaMediaRepository(() => database.client(dr.gate.current() ? undefined : db.readTarget())), dr.gate),
    cache,
    onCommitted: (meta) => mediaModule.onCommitted(meta),
    copyTargets: (backend) => mediaModule.copyTargets(backend),
    stores,
    activeBackend: activeMedia,
    backendDown,
    gcGraceMs: config.mediaGcGraceMs,
    spool,
    contentCache: new VersionContentCache({ maxBytes: config.mediaContentCacheBytes, maxItemBytes: 256 * 1024 }),
    maxBytes: config.mediaMaxBytes,
    logger,
  });

  // Backups: the inventory and RPO metrics, and requests that workers carry out.
  const backups = createBackupModule({
    config, logger, metrics, redis, prefix, clients: database, stores, migrationsDir: MIGRATIONS_DIR, audit: dr.audit,
    activeTarget: async () => dr.state.current().database.active,
  });
  dr.admin.routers.push(...backups.routers);
  await warmUpPrisma();
  const incidents = createIncidentsModule({
    config,
    logger,
    metrics,
    redis,
    prefix,
    prisma: () => database.client(),
    audit: dr.audit,
    dr: dr.state,
    health,
    lifecycle,
    otherMediaUp: async () => {
      const others = [...mediaRunners].filter(([name]) => name !== activeMedia());
      const results = await Promise.all(others.map(([, runner]) => runner.get(config.healthIntervalMs + timeoutMs)));
      return results.some((r) => r?.ok === true);
    },
    databaseUp: () => db.runners.get(database.active)?.latest()?.ok === true,
    sender: options.notifySender,
    outboxPollMs: options.outboxPollMs,
    outboxBackoffMs: options.outboxBackoffMs,
    checksIntervalMs: options.incidentChecksMs,
  });
  dr.admin.routers.push(...incidents.adminRouters);
  mediaModule.sync.onProgress = (job) => incidents.hub.publish('job.progress', job);

  const app = buildApp({
    publicRouters: incidents.publicRouters,
    config,
    adminTokens: config.adminTokens,
    logger,
    metrics,
    lifecycle,
    health,
    media,
    mediaIdleBodyTimeoutMs: config.mediaIdleBodyTimeoutMs,
    headers: options.withoutReadOnlyGuard ? [] : dr.headers,
    guards: options.withoutReadOnlyGuard ? [] : dr.guards,
    admin: dr.admin,
    authLimiter: dr.limiter,
  });
  let server: Server | undefined;
  let metricsListener: Awaited<ReturnType<typeof startMetricsListener>> | undefined;

  return {
    config,
    app,
    metrics,
    lifecycle,
    health,
    database,
    stores,
    redis,
    dr,
    db,
    media: mediaModule,
    backups,
    incidents,
    async listen() {
      health.start();
      await dr.start();
      mediaModule.start();
      backups.start();
      await incidents.start();
      server = app.listen(config.port, config.host);
      await new Promise<void>((resolve, reject) => {
        server!.once('listening', resolve).once('error', reject);
      });
      const address = server.address() as AddressInfo;
      if (config.metricsPort !== undefined) metricsListener = await startMetricsListener(metrics.registry, config.metricsPort, config.host);
      logger.info({ port: address.port, host: address.address, metricsPort: metricsListener?.address.port, instanceId: config.instanceId }, 'listening');
      return address;
    },
    async stop() {
      lifecycle.shuttingDown = true;
      health.stop();
      if (server) await drain(server, config.shutdownTimeoutMs, logger);
      await metricsListener?.close();
      mediaModule.stop();
      backups.stop();
      await incidents.stop();
      await dr.stop();
      await Promise.allSettled([database.closeAll(), closeRedis(redis), closeRedis(dr.subscriber)]);
      for (const store of stores.values()) store.close();
      logger.info('stopped');
    },
  };
}

/** Stops accepting, lets in-flight requests finish within the bound, then cuts what is left. */
async function drain(server: Server, timeoutMs: number, logger: Logger): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // Connections go idle as their last request ends; close each as soon as it does.
  const sweeper = setInterval(() => server.closeIdleConnections(), 50);
  server.closeIdleConnections();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  if ((await Promise.race([closed, timedOut])) === 'timeout') {
    logger.warn({ timeoutMs }, 'requests still running at the shutdown bound; closing their connections');
    server.closeAllConnections();
    await closed;
  }
  clearTimeout(timer);
  clearInterval(sweeper);
}

export async function closeRedis(redis: Redis): Promise<void> {
  await redis.quit().catch(() => undefined);
  redis.disconnect();
  if (redis.status === 'end') return;
  // A client that never connected may not emit 'end'; do not let shutdown wait on it.
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    redis.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
