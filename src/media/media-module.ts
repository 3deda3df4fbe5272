import type { Router } from 'express';
import type { Redis } from 'ioredis';
import type { Config, MediaBackendName } from '../config/config.ts';
import type { DrModule } from '../dr-module.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { BackupReplicator } from './backup-replicator.ts';
import type { MediaCache } from './media-cache.ts';
import { mediaAdminRoutes } from './media-admin-routes.ts';
import { MediaFailoverService } from './media-failover-service.ts';
import type { MediaMetadata } from './media-repository.ts';
import { MediaSyncService } from './media-sync.ts';
import type { ObjectStore } from './object-store.ts';

export interface MediaModule {
  failover: MediaFailoverService;
  sync: MediaSyncService;
  replicator?: BackupReplicator;
  onStored(meta: MediaMetadata): Promise<void>;
  routers: Router[];
  start(): void;
  stop(): void;
}

/** Media failover, sync, verification and continuous backup, following the DR state. */
export function createMediaModule(deps: {
  config: Config;
  stores: ReadonlyMap<MediaBackendName, ObjectStore>;
  cache: MediaCache;
  dr: DrModule;
  redis: Redis;
  prefix: string;
  metrics: Metrics;
  logger: Logger;
}): MediaModule {
  const { config, stores, dr, metrics, logger } = deps;
  const setGauge = (active: MediaBackendName) => {
    for (const b of ['primary', 'backup'] as const) if (stores.has(b)) metrics.mediaActiveBackend.set({ backend: b }, b === active ? 1 : 0);
  };
  setGauge('primary');
  dr.state.onApply((state) => setGauge(state.media.active));

  const failover = new MediaFailoverService({ stores, dr: dr.state, store: dr.store, cache: deps.cache, metrics, logger, instanceId: config.instanceId, timeoutMs: config.healthTimeoutMs });
  const sync = new MediaSyncService({
    stores,
    lockStore: dr.store,
    redis: deps.redis,
    prefix: deps.prefix,
    instanceId: config.instanceId,
    logger,
    concurrency: config.mediaSyncConcurrency,
    inlineMax: config.mediaSyncInlineMax,
  });
  const primary = stores.get('primary');
  const backup = stores.get('backup');
  const replicator =
    config.mediaContinuousBackup && primary && backup
      ? new BackupReplicator({ redis: deps.redis, prefix: deps.prefix, primary, backup, logger, intervalMs: 500, onBacklog: (n) => metrics.mediaBackupBacklog.set(n) })
      : undefined;
  if (replicator) {
    metrics.mediaBackupBacklog.set(0);
  }
  return {
    failover,
    sync,
    replicator,
    async onStored(meta) {
      if (replicator && meta.backend === 'primary') {
        await replicator.enqueue(meta.key);
        metrics.mediaBackupBacklog.set(await replicator.backlog());
      }
    },
    routers: [mediaAdminRoutes({ failover, sync, dr: dr.state, audit: dr.audit })],
    start() {
      replicator?.start();
    },
    stop() {
      replicator?.stop();
    },
  };
}
