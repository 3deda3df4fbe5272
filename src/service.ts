import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import { buildApp } from './app.ts';
import { createPrisma, DatabaseClients, type PrismaFactory } from './adapters/database-clients.ts';
import type { ObjectStore } from './adapters/object-store.ts';
import { createObjectStores } from './adapters/object-stores.ts';
import { warmUpPrisma } from './adapters/prisma-warm-up.ts';
import { closeRedis, createRedisClient } from './adapters/redis-client.ts';
import type { Config } from './config/config.ts';
import type { DatabaseTarget, MediaBackendName } from './domain.ts';
import { HealthService } from './health/health-service.ts';
import { ProbeRunner } from './health/probe-runner.ts';
import { probeRedis } from './health/redis-probe.ts';
import { Lifecycle } from './lifecycle/lifecycle.ts';
import type { Logger } from './logger.ts';
import { startMetricsListener } from './metrics/metrics-listener.ts';
import { createMetrics, type Metrics } from './metrics/metrics.ts';
import { createAdminModule, type AdminModule } from './modules/admin-module.ts';
import { createAuditLog } from './modules/audit-module.ts';
import { createBackupModule, type BackupModule } from './modules/backup-module.ts';
import { createDatabaseModule, type DatabaseModule } from './modules/database-module.ts';
import { createDrStateModule, type DrStateModule } from './modules/dr-state-module.ts';
import { INITIAL_STATE, type DrState } from './services/dr-state/dr-state.ts';
import { withNodeRecorded } from './services/dr-state/database-state.ts';
import { createIncidentsModule, type IncidentsModule } from './modules/incidents-module.ts';
import { createLiveEvents } from './modules/live-events.ts';
import { createMediaModule, type MediaModule } from './modules/media-module.ts';
import { createReadOnlyModule, type ReadOnlyModule } from './modules/read-only-module.ts';
import { BARRIER_WAIT_MS, createWriteGateModule, type WriteGateModule } from './modules/write-gate-module.ts';
import { DatabaseWriteFence } from './services/database/write-fence.ts';
import type { AuditLog } from './services/audit/audit-log.ts';
import { migrate } from './services/database/migrator.ts';
import type { WebhookSender } from './services/incidents/notification-outbox.ts';
import { MIGRATIONS_DIR } from './paths.ts';

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
  /** Bounds on anonymous /status/events streams (tests make them small). */
  publicStreams?: { max?: number; perAddress?: number };
}

/** Everything one running instance holds; built only here (the composition root). */
export interface Service {
  config: Config;
  app: Express;
  metrics: Metrics;
  lifecycle: Lifecycle;
  health: HealthService;
  // Stores: clients of the outside dependencies.
  databaseClients: DatabaseClients;
  objectStores: ReadonlyMap<MediaBackendName, ObjectStore>;
  redis: Redis;
  // Capability modules: each builds its services and routers.
  drState: DrStateModule;
  writeGate: WriteGateModule;
  audit: AuditLog;
  readOnly: ReadOnlyModule;
  admin: AdminModule;
  database: DatabaseModule;
  media: MediaModule;
  backups: BackupModule;
  incidents: IncidentsModule;
  listen(): Promise<AddressInfo>;
  /** Graceful stop: readiness 503, stop accepting, drain within the bound, close every client. */
  stop(): Promise<void>;
}

/**
 * The composition root, one straight line: stores (clients of PostgreSQL, Redis, S3) → capability
 * modules (each builds its services and returns its routers) → health → the app, which mounts the
 * application routers behind the guards and the admin routers once behind /admin's JSON and auth.
 */
export async function createService(config: Config, logger: Logger, options: ServiceOptions = {}): Promise<Service> {
  if (config.migrateOnStart) {
    const result = await migrate(config.databaseUrl, MIGRATIONS_DIR);
    logger.info({ applied: result.applied, restorePoint: result.restorePoint }, 'migrations applied');
  }
  const prefix = options.redisKeyPrefix ?? 'sav3:';
  const metrics = createMetrics();
  const lifecycle = new Lifecycle();

  // 1. Stores.
  const databaseClients = new DatabaseClients(
    { primary: config.databaseUrl, replica: config.databaseReplicaUrl },
    options.prismaFactory ?? createPrisma,
  );
  const redis = createRedisClient(config.redisUrl, logger, 'sav3-api');
  const objectStores = createObjectStores(config);
  const prisma = () => databaseClients.client();

  // 2. Capability modules, in the order they must follow a new DR state (the write barrier first).
  const drState = createDrStateModule({ config, logger, metrics, redis, prefix });
  const dr = drState.service;
  // The database capability adds its reasons to refuse writes (standby, fenced, older timeline);
  // read only when a write or a lift of read-only mode asks, after `database` below exists.
  const databaseRefusal = () => database.writeRefusal();
  const writeGate = createWriteGateModule({ dr, metrics, logger, refusal: databaseRefusal });
  // Events wait in the spool while the active target cannot take them (a promotion recorded and the
  // switch still to come, a standby target): no failed insert first, nothing written to a node to be discarded.
  const audit = createAuditLog({
    config,
    logger,
    redis,
    prefix,
    prisma,
    sinkClosed: () => database.writeRefusal()?.code === 'not_writable',
  });
  const readOnly = createReadOnlyModule({
    dr,
    audit,
    metrics,
    logger,
    refusal: databaseRefusal,
    // A read-only TTL lifts the mode only onto a target verified writable by a fresh probe.
    liftCheck: async () => {
      await database.runners.get(dr.current().database.active)?.run();
      return database.watch.verifiedWritable();
    },
  });
  const database = createDatabaseModule({
    config,
    clients: databaseClients,
    dr,
    locks: drState.locks,
    audit,
    readOnly: readOnly.service,
    metrics,
    logger,
    migrationsDir: MIGRATIONS_DIR,
  });
  // A fresh instance's seed: the newest writable node (by timeline) as the target, every node's identity.
  dr.useSeedDatabase(async () => {
    const results = await Promise.all(
      [...database.runners.entries()].map(async ([target, runner]) => ({ target, result: await runner.run().catch(() => undefined) })),
    );
    const now = new Date().toISOString();
    let seeded: DrState['database'] = { ...INITIAL_STATE.database };
    for (const { target, result } of results)
      seeded = withNodeRecorded(seeded, target, database.watch.identity(target), { inRecovery: result?.data?.inRecovery ?? null });
    const writable = results
      .filter(({ result }) => result?.ok && result.data && !result.data.inRecovery && !result.data.fenced)
      .sort((x, y) => (y.result!.data!.timeline ?? 0) - (x.result!.data!.timeline ?? 0));
    const to = writable[0]?.target;
    return to ? { ...seeded, active: to, since: now, by: 'system:seed' } : seeded;
  });
  // The database write fence: every write-relevant change raises it on the nodes before it answers.
  dr.useWriteFence(new DatabaseWriteFence(databaseClients, BARRIER_WAIT_MS, prefix));
  const events = createLiveEvents({ config, logger, redis, prefix });
  const media = createMediaModule({
    config,
    objectStores,
    dr,
    locks: drState.locks,
    audit,
    gate: writeGate.gate,
    redis,
    prefix,
    prisma,
    repositoryClient: () => databaseClients.client(writeGate.gate.current() ? undefined : database.readTarget()),
    metrics,
    logger,
    onSyncProgress: (job) => events.hub.publish('job.progress', job),
  });
  const admin = createAdminModule({
    config,
    logger,
    dr,
    readOnly: readOnly.service,
    audit,
    gate: writeGate.gate,
    databasePair: () => database.pair(config.healthIntervalMs + config.healthTimeoutMs),
    noWritableNode: async () => {
      await Promise.all([...database.runners.values()].map((r) => r.run().catch(() => undefined)));
      const { writableNodes, fenced } = database.watch.report();
      if (writableNodes.length === 0)
        return `no configured database node takes writes (every node is a standby, fenced${fenced.length > 0 ? ` (${fenced.join(', ')})` : ''} or not answering); promote a node first`;
      // A node takes writes, but not the one writes go to (a switch to the unpromoted replica):
      // lifting would turn every write into a 503.
      const refusal = database.watch.writeRefusal();
      if (!refusal) return null;
      if (refusal.code === 'state_mismatch') return `${refusal.message} (POST /admin/dr/state/reset)`;
      const { active, newestTimeline } = dr.current().database;
      const probe = (target: DatabaseTarget) => database.runners.get(target)?.latest()?.data;
      // Where writes could go instead: another node that takes writes and is not behind the newest timeline.
      const elsewhere = writableNodes.filter(
        (n) => n !== active && (newestTimeline === undefined || (probe(n)?.timeline ?? 0) >= newestTimeline),
      );
      const remedies = [
        ...(elsewhere.length > 0 ? [`switch to ${elsewhere.join(' or ')} (POST /admin/database/switch)`] : []),
        ...(probe(active)?.inRecovery ? [`promote ${active}`] : []),
      ];
      return remedies.length > 0 ? `${refusal.message}; ${remedies.join(', or ')}, first` : refusal.message;
    },
  });
  // Backups: the inventory and RPO metrics, and requests that workers carry out.
  const backups = createBackupModule({
    config,
    logger,
    metrics,
    redis,
    prefix,
    clients: databaseClients,
    stores: objectStores,
    migrationsDir: MIGRATIONS_DIR,
    audit,
    activeTarget: async () => dr.current().database.active,
  });

  // 3. Health: what the probes of every capability report.
  const timeoutMs = config.healthTimeoutMs;
  const redisRunner = new ProbeRunner<void>((signal) => probeRedis(config.redisUrl, timeoutMs, signal), {
    dependency: 'redis',
    target: () => 'redis',
    timeoutMs,
    metrics,
    logger,
  });
  const health = new HealthService({
    database: { runners: database.runners, active: () => databaseClients.active, readTarget: database.readTarget },
    stateKnown: () => dr.known(),
    replication: async () => database.replication() as Record<string, unknown> | undefined,
    media: {
      runners: media.runners,
      active: () => dr.current().media.active,
      bucket: (b) => objectStores.get(b)?.bucket ?? '',
      saturated: media.saturated,
      backup: () => media.replicator?.stats(),
    },
    redis: redisRunner,
    drSummary: () => ({
      readOnly: readOnly.service.isActive(),
      stateVersion: dr.current().version,
      ttlExpiryRefused: readOnly.service.expiryRefused(),
    }),
    writes: () => {
      const nodes = database.watch.report();
      return { refusal: writeGate.gate.closed(), splitBrain: nodes.splitBrain, writableNodes: nodes.writableNodes, fenced: nodes.fenced };
    },
    lifecycle,
    intervalMs: config.healthIntervalMs,
    timeoutMs,
  });

  await warmUpPrisma();
  const incidents = createIncidentsModule({
    config,
    logger,
    metrics,
    prisma,
    audit,
    dr,
    health,
    lifecycle,
    events,
    otherMediaUp: media.otherBackendUp,
    databaseUp: () => database.runners.get(databaseClients.active)?.latest()?.ok === true,
    sender: options.notifySender,
    outboxPollMs: options.outboxPollMs,
    outboxBackoffMs: options.outboxBackoffMs,
    checksIntervalMs: options.incidentChecksMs,
    publicStreams: options.publicStreams,
  });

  // 4. The app: every router, mounted once.
  const app = buildApp({
    config,
    adminTokens: config.adminTokens,
    logger,
    metrics,
    lifecycle,
    health,
    headers: options.withoutReadOnlyGuard ? [] : [readOnly.header],
    guards: options.withoutReadOnlyGuard ? [] : [readOnly.guard, writeGate.guard],
    routers: [...media.publicRouters, ...incidents.publicRouters],
    admin: {
      json: admin.json,
      auth: admin.auth,
      routers: [...admin.adminRouters, ...database.adminRouters, ...media.adminRouters, ...backups.adminRouters, ...incidents.adminRouters],
    },
    authLimiter: admin.limiter,
  });
  let server: Server | undefined;
  let metricsListener: Awaited<ReturnType<typeof startMetricsListener>> | undefined;

  return {
    config,
    app,
    metrics,
    lifecycle,
    health,
    databaseClients,
    objectStores,
    redis,
    drState,
    writeGate,
    audit,
    readOnly,
    admin,
    database,
    media,
    backups,
    incidents,
    async listen() {
      health.start();
      await drState.start();
      audit.start();
      media.start();
      backups.start();
      await incidents.start();
      server = app.listen(config.port, config.host);
      await new Promise<void>((resolve, reject) => {
        server!.once('listening', resolve).once('error', reject);
      });
      const address = server.address() as AddressInfo;
      if (config.metricsPort !== undefined) metricsListener = await startMetricsListener(metrics.registry, config.metricsPort, config.host);
      logger.info(
        { port: address.port, host: address.address, metricsPort: metricsListener?.address.port, instanceId: config.instanceId },
        'listening',
      );
      return address;
    },
    async stop() {
      lifecycle.shuttingDown = true;
      health.stop();
      if (server) await drain(server, config.shutdownTimeoutMs, logger);
      await metricsListener?.close();
      media.stop();
      backups.stop();
      await incidents.stop();
      readOnly.stop();
      audit.stop();
      await audit.flush();
      await drState.stop();
      await Promise.allSettled([databaseClients.closeAll(), closeRedis(redis), closeRedis(drState.subscriber)]);
      for (const store of objectStores.values()) store.close();
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
