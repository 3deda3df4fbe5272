import type { Redis } from 'ioredis';
import { createRedisClient, waitReady } from '../adapters/redis-client.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { drStateFile } from '../services/dr-state/dr-state-file.ts';
import { DrStateService } from '../services/dr-state/dr-state-service.ts';
import { ClusterLock, RedisLockStore } from '../services/dr-state/cluster-lock.ts';
import { RedisDrStateStore } from '../services/dr-state/dr-state-store.ts';
import { redisSubscribe } from '../services/dr-state/redis-subscriber.ts';

export const DR_SYNC_INTERVAL_MS = 1000;

/** The shared DR state: its Redis store (compare-and-set, heartbeats), the sync service, the local file, the cluster lock. */
export interface DrStateModule {
  /** The state every instance follows (`dr` in the services' dependencies). */
  service: DrStateService;
  /** The Redis store behind it. */
  stateStore: RedisDrStateStore;
  /** The cluster-wide lock of DR operations (database, media switch, media sync). */
  locks: ClusterLock;
  /** The Redis connection that listens for state changes. */
  subscriber: Redis;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createDrStateModule(deps: {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  redis: Redis;
  prefix: string;
}): DrStateModule {
  const { config, logger, metrics, redis, prefix } = deps;
  const subscriber = createRedisClient(config.redisUrl, logger, 'sav3-api-dr-subscriber', { offlineQueue: true });
  const stateStore = new RedisDrStateStore(redis, prefix);
  const service = new DrStateService({
    stateStore,
    subscribe: redisSubscribe(subscriber, stateStore.channel),
    instanceId: config.instanceId,
    syncIntervalMs: DR_SYNC_INTERVAL_MS,
    metrics,
    logger,
    file: drStateFile(config.drStateFile),
    leaseMs: config.drStateLeaseMs,
  });
  return {
    service,
    stateStore,
    locks: new ClusterLock(new RedisLockStore(redis, `${prefix}dr:lock:`), config.instanceId),
    subscriber,
    async start() {
      // Give a reachable Redis a moment to connect, so the first sync sees the shared state.
      await Promise.all([waitReady(redis, 2000), waitReady(subscriber, 2000)]);
      await service.start();
    },
    async stop() {
      await service.stop();
    },
  };
}
