import type { Router } from 'express';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import type { MediaBackendName } from '../domain.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { ProbeRunner } from '../health/probe-runner.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import type { ClusterLock } from '../services/dr-state/cluster-lock.ts';
import { RedisJobRecords } from '../services/jobs/job-records.ts';
import { BackupReplicator } from '../services/media/backup-replicator.ts';
import { RedisMediaCache, updatingCache } from '../services/media/media-cache.ts';
import { PrismaMediaRepository } from '../services/media/media-repository.ts';
import { MediaService } from '../services/media/media-service.ts';
import { UploadSpool } from '../services/media/upload-spool.ts';
import { VersionContentCache } from '../services/media/version-content-cache.ts';
import { fencedRepository } from '../services/write-gate/fenced-repository.ts';
import type { WriteGate } from '../services/write-gate/write-gate.ts';
import { mediaAdminRoutes } from '../routes/media-admin-routes.ts';
import { mediaRoutes } from '../routes/media-routes.ts';
import { MediaConsistencyChecker } from '../services/media/media-consistency.ts';
import { MediaFailoverService } from '../services/media/media-failover-service.ts';
import { MediaGarbageCollector } from '../services/media/media-gc.ts';
import { MediaSyncService, type SyncProgress } from '../services/media/media-sync.ts';
import { PrismaMediaVersionRepository, type MediaVersionRepository } from '../services/media/media-version-repository.ts';
import type { ObjectStore } from '../adapters/object-store.ts';

export interface MediaModule {
  /** Uploads, downloads and deletes (the public /media routes). */
  service: MediaService;
  /** Background bucket probes per backend (health, and reads skip a backend that is down). */
  runners: Map<MediaBackendName, ProbeRunner<void>>;
  /** Pools (per backend, and the upload spool) that are full now. */
  saturated(): string[];
  /** Whether a backend other than the active one answered its latest probe (waits for one if none is fresh). */
  otherBackendUp(): Promise<boolean>;
  failover: MediaFailoverService;
  sync: MediaSyncService;
  versions: MediaVersionRepository;
  gc: MediaGarbageCollector;
  consistency: MediaConsistencyChecker;
  replicator?: BackupReplicator;
  /** Backends the continuous backup copies a version written to `backend` to. */
  copyTargets(backend: MediaBackendName): MediaBackendName[];
  /** Public routers (/media). */
  publicRouters: Router[];
  /** Admin routers (failover, sync, verify). */
  adminRouters: Router[];
  start(): void;
  stop(): void;
}

/**
 * The media capability in one place: the object stores' probes, the media service behind /media,
 * failover, sync, verification, continuous backup and garbage collection, following the DR state.
 */
export function createMediaModule(deps: {
  config: Config;
  objectStores: ReadonlyMap<MediaBackendName, ObjectStore>;
  dr: DrStateService;
  locks: ClusterLock;
  audit: AuditLog;
  gate: WriteGate;
  redis: Redis;
  prefix: string;
  /** Any client (versions, outbox). */
  prisma: () => PrismaClient;
  /** The client media metadata goes through: the active target inside a write, else one that answers. */
  repositoryClient: () => PrismaClient;
  metrics: Metrics;
  logger: Logger;
  /** Told of every saved sync job state (the live events port). */
  onSyncProgress?: (job: SyncProgress) => void;
}): MediaModule {
  const { config, dr, metrics, logger } = deps;
  const stores = deps.objectStores;
  const setGauge = (active: MediaBackendName) => {
    for (const b of ['primary', 'backup'] as const) if (stores.has(b)) metrics.mediaActiveBackend.set({ backend: b }, b === active ? 1 : 0);
  };
  setGauge('primary');
  dr.onApply((state) => setGauge(state.media.active));
  const activeBackend = () => dr.current().media.active;

  const timeoutMs = config.healthTimeoutMs;
  const runners = new Map<MediaBackendName, ProbeRunner<void>>();
  for (const [name, store] of stores) {
    runners.set(
      name,
      new ProbeRunner((signal) => store.checkBucket(timeoutMs, signal), {
        dependency: 'media',
        target: () => name,
        timeoutMs,
        metrics,
        logger,
      }),
    );
  }
  // Reads skip a backend whose latest background probe failed (no 30 s wait on a dead store).
  const backendDown = (backend: MediaBackendName) => runners.get(backend)?.latest()?.ok === false;
  const spool = new UploadSpool({ maxConcurrent: config.mediaSpoolMaxConcurrent, maxBytes: config.mediaSpoolMaxBytes });
  const saturated = () => {
    const pools = [...stores].flatMap(([name, store]) => store.saturated().map((pool) => `${name}.${pool}`));
    if (spool.full) pools.push('spool');
    return pools;
  };
  const otherBackendUp = async () => {
    const others = [...runners].filter(([name]) => name !== activeBackend());
    const results = await Promise.all(others.map(([, runner]) => runner.get(config.healthIntervalMs + timeoutMs)));
    return results.some((r) => r?.ok === true);
  };
  const cache = new RedisMediaCache(deps.redis, deps.prefix, config.mediaCacheTtlSeconds);

  const versions = new PrismaMediaVersionRepository(deps.prisma);
  const failover = new MediaFailoverService({
    stores,
    dr,
    locks: deps.locks,
    cache,
    metrics,
    logger,
    instanceId: config.instanceId,
    timeoutMs: config.healthTimeoutMs,
  });
  const jobs = new RedisJobRecords(deps.redis, deps.prefix);
  const sync = new MediaSyncService({
    stores,
    versions,
    locks: deps.locks,
    jobs,
    instanceId: config.instanceId,
    logger,
    concurrency: config.mediaSyncConcurrency,
    inlineMax: config.mediaSyncInlineMax,
    onProgress: deps.onSyncProgress,
  });
  const gc = new MediaGarbageCollector({
    versions,
    stores,
    backendDown,
    graceMs: config.mediaGcGraceMs,
    intervalMs: config.mediaGcIntervalMs,
    sweepEvery: 10,
    logger,
  });
  const consistency = new MediaConsistencyChecker({
    versions,
    stores,
    graceMs: config.mediaGcGraceMs,
    jobs,
    instanceId: config.instanceId,
    logger,
    inlineMax: 2000,
  });
  const continuous = config.mediaContinuousBackup && stores.has('primary') && stores.has('backup');
  const replicator = continuous
    ? new BackupReplicator({
        versions,
        stores,
        backendDown,
        logger,
        intervalMs: 500,
        onStats: ({ backlog, oldestAgeSeconds, stuck, retired }) => {
          metrics.mediaBackupBacklog.set(backlog);
          metrics.mediaBackupStuck.set(stuck);
          metrics.mediaBackupRetired.set(retired);
          metrics.rpoExposure.set({ component: 'media' }, oldestAgeSeconds);
        },
      })
    : undefined;
  if (replicator) {
    metrics.mediaBackupBacklog.set(0);
    metrics.mediaBackupStuck.set(0);
    metrics.mediaBackupRetired.set(0);
    metrics.rpoExposure.set({ component: 'media' }, 0);
  }
  const copyTargets = (backend: MediaBackendName): MediaBackendName[] =>
    continuous ? [...stores.keys()].filter((b) => b !== backend) : [];
  const service = new MediaService({
    // Writes go to the active target; reads outside a write may go to a target that answers.
    // The cache update is part of the fenced commit: a barrier waits for it (see updatingCache).
    repository: fencedRepository(updatingCache(new PrismaMediaRepository(deps.repositoryClient, deps.prefix), cache), deps.gate),
    cache,
    onCommitted: () => replicator?.kick(),
    // A copy that failed its integrity check on read is no longer trusted: the backend leaves the
    // version's backends (reads prefer another) and the outbox copies the version there again.
    onCorrupt: ({ key, version, backend }) => {
      metrics.mediaIntegrityFailures.inc({ backend });
      if (!version) return;
      void versions.markBad(version, backend).then(
        (queued) => {
          if (queued) logger.warn({ key, version, backend }, 'corrupt media copy dropped from the metadata; a repair copy is queued');
          replicator?.kick();
        },
        (err: unknown) => logger.warn({ key, version, backend, err: String(err) }, 'a corrupt media copy could not be marked'),
      );
    },
    copyTargets,
    stores,
    activeBackend,
    backendDown,
    gcGraceMs: config.mediaGcGraceMs,
    spool,
    contentCache: new VersionContentCache({ maxBytes: config.mediaContentCacheBytes, maxItemBytes: 256 * 1024 }),
    maxBytes: config.mediaMaxBytes,
    logger,
  });
  return {
    service,
    runners,
    saturated,
    otherBackendUp,
    failover,
    sync,
    versions,
    gc,
    consistency,
    replicator,
    copyTargets,
    publicRouters: [
      mediaRoutes(service, {
        idleBodyTimeoutMs: config.mediaIdleBodyTimeoutMs,
        minUploadBytesPerSec: config.mediaMinUploadBytesPerSec,
        minUploadRateWindowMs: config.mediaMinUploadRateWindowMs,
      }),
    ],
    adminRouters: [mediaAdminRoutes({ failover, sync, consistency, dr, audit: deps.audit })],
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
