import type { MediaBackendName } from '../domain.ts';
import type { Router } from 'express';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import type { DrModule } from '../dr-module.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { BackupReplicator } from '../services/media/backup-replicator.ts';
import type { MediaCache } from '../services/media/media-cache.ts';
import { mediaAdminRoutes } from '../routes/media-admin-routes.ts';
import { MediaConsistencyChecker } from '../services/media/media-consistency.ts';
import { MediaFailoverService } from '../services/media/media-failover-service.ts';
import { MediaGarbageCollector } from '../services/media/media-gc.ts';
import type { MediaMetadata } from '../services/media/media-repository.ts';
import { MediaSyncService } from '../services/media/media-sync.ts';
import { PrismaMediaVersionRepository, type MediaVersionRepository } from '../services/media/media-version-repository.ts';
import type { ObjectStore } from '../adapters/object-store.ts';
import { RedisJobRecords } from '../services/jobs/job-records.ts';

export interface MediaModule {
  failover: MediaFailoverService;
  sync: MediaSyncService;
  versions: MediaVersionRepository;
  gc: MediaGarbageCollector;
  consistency: MediaConsistencyChecker;
  replicator?: BackupReplicator;
  /** Backends the continuous backup copies a version written to `backend` to. */
  copyTargets(backend: MediaBackendName): MediaBackendName[];
  onCommitted(meta: MediaMetadata): void;
  routers: Router[];
  start(): void;
  stop(): void;
}

/** Media failover, sync, verification, continuous backup and garbage collection, following the DR state. */
export function createMediaModule(deps: {
  config: Config;
  stores: ReadonlyMap<MediaBackendName, ObjectStore>;
  cache: MediaCache;
  dr: DrModule;
  redis: Redis;
  prefix: string;
  prisma: () => PrismaClient;
  backendDown: (backend: MediaBackendName) => boolean;
  metrics: Metrics;
  logger: Logger;
}): MediaModule {
  const { config, stores, dr, metrics, logger, backendDown } = deps;
  const setGauge = (active: MediaBackendName) => {
    for (const b of ['primary', 'backup'] as const) if (stores.has(b)) metrics.mediaActiveBackend.set({ backend: b }, b === active ? 1 : 0);
  };
  setGauge('primary');
  dr.state.onApply((state) => setGauge(state.media.active));

  const versions = new PrismaMediaVersionRepository(deps.prisma);
  const failover = new MediaFailoverService({ stores, dr: dr.state, locks: dr.locks, cache: deps.cache, metrics, logger, instanceId: config.instanceId, timeoutMs: config.healthTimeoutMs });
  const jobs = new RedisJobRecords(deps.redis, deps.prefix);
  const sync = new MediaSyncService({
    stores,
    versions,
    locks: dr.locks,
    jobs,
    instanceId: config.instanceId,
    logger,
    concurrency: config.mediaSyncConcurrency,
    inlineMax: config.mediaSyncInlineMax,
  });
  const gc = new MediaGarbageCollector({ versions, stores, backendDown, graceMs: config.mediaGcGraceMs, intervalMs: config.mediaGcIntervalMs, sweepEvery: 10, logger });
  const consistency = new MediaConsistencyChecker({ versions, stores, graceMs: config.mediaGcGraceMs, jobs, instanceId: config.instanceId, logger, inlineMax: 2000 });
  const continuous = config.mediaContinuousBackup && stores.has('primary') && stores.has('backup');
  const replicator = continuous
    ? new BackupReplicator({
        versions,
        stores,
        backendDown,
        logger,
        intervalMs: 500,
        onStats: ({ backlog, oldestAgeSeconds }) => {
          metrics.mediaBackupBacklog.set(backlog);
          metrics.rpoExposure.set({ component: 'media' }, oldestAgeSeconds);
        },
      })
    : undefined;
  if (replicator) {
    metrics.mediaBackupBacklog.set(0);
    metrics.rpoExposure.set({ component: 'media' }, 0);
  }
  return {
    failover,
    sync,
    versions,
    gc,
    consistency,
    replicator,
    copyTargets(backend) {
      if (!continuous) return [];
      return [...stores.keys()].filter((b) => b !== backend);
    },
    onCommitted() {
      replicator?.kick();
    },
    routers: [mediaAdminRoutes({ failover, sync, consistency, dr: dr.state, audit: dr.audit })],
    start() {
      replicator?.start();
      gc.start();
    },
    stop() {
      replicator?.stop();
      gc.stop();
    },
  };
}
