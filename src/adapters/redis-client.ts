import { Redis } from 'ioredis';
import type { Logger } from '../logger.ts';

export const REDIS_COMMAND_TIMEOUT_MS = 1000;

/**
 * The shared Redis connection. Commands fail at once while it is down (no offline queue) and
 * time out when it hangs, so no request waits on Redis; it reconnects forever in the background.
 */
export function createRedisClient(url: string, logger: Logger, name: string, options: { offlineQueue?: boolean } = {}): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: options.offlineQueue ?? false,
    maxRetriesPerRequest: 1,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 2000,
    connectionName: name,
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
  let down = false;
  client.on('error', (err: Error) => {
    if (!down) logger.warn({ err: err.message, connection: name }, 'redis connection lost; retrying');
    down = true;
  });
  client.on('ready', () => {
    if (down) logger.info({ connection: name }, 'redis connection restored');
    down = false;
  });
  client.connect().catch(() => undefined);
  return client;
}

export function isReady(client: Redis): boolean {
  return client.status === 'ready';
}

/** Resolves once the client is ready, or after `timeoutMs` (start-up never waits longer on Redis). */
export function waitReady(client: Redis, timeoutMs: number): Promise<boolean> {
  if (isReady(client)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      resolve(false);
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve(true);
    };
    client.once('ready', onReady);
  });
}

/** Quits (or, failing that, disconnects) a client and waits, at most 1 s, until it has ended. */
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
