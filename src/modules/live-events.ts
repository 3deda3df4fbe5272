import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import { createRedisClient } from '../adapters/redis-client.ts';
import { EventHub } from '../services/incidents/event-hub.ts';

/**
 * The live events every capability may publish to (sync progress, DR state, incidents) and the SSE
 * streams read: built before the modules so each gets it at creation. The incidents module starts
 * and stops it with its streams.
 */
export interface LiveEvents {
  hub: EventHub;
  start(): Promise<void>;
  stop(): void;
}

export function createLiveEvents(deps: { config: Config; logger: Logger; redis: Redis; prefix: string }): LiveEvents {
  const { config, logger } = deps;
  const subscriber = createRedisClient(config.redisUrl, logger, 'sav3-api-events', { offlineQueue: true });
  const hub = new EventHub({ publisher: deps.redis, subscriber, channel: `${deps.prefix}events`, logger, instanceId: config.instanceId });
  return {
    hub,
    start: () => hub.start(),
    stop: () => subscriber.disconnect(),
  };
}
