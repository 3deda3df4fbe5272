import { Redis } from 'ioredis';

/**
 * PINGs Redis on a short-lived connection of its own (not the one that serves the cache and
 * DR state), with retries off, closed at the end or when the signal fires.
 */
export async function probeRedis(url: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: true,
    retryStrategy: () => null,
    connectionName: 'sav3-health-probe',
  });
  let lastError: unknown;
  client.on('error', (err) => {
    lastError = err;
  });
  const close = () => client.disconnect();
  signal.addEventListener('abort', close, { once: true });
  try {
    await client.connect();
    const answer = await client.ping();
    if (answer !== 'PONG') throw new Error(`unexpected PING answer ${answer}`);
  } catch (err) {
    // ioredis reports "Connection is closed" after the socket error it already emitted; keep the cause.
    throw lastError ?? err;
  } finally {
    signal.removeEventListener('abort', close);
    close();
  }
}
