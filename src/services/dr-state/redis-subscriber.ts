import type { Redis } from 'ioredis';
import type { Subscribe } from './dr-state-service.ts';

/**
 * Pub/sub on a connection of its own (a subscribed connection can do nothing else). ioredis
 * resubscribes after a reconnect; messages published meanwhile are lost, so every reconnect also
 * triggers a re-read.
 */
export function redisSubscribe(subscriber: Redis, channel: string): Subscribe {
  return (onChange) => {
    const onMessage = (ch: string) => {
      if (ch === channel) onChange();
    };
    subscriber.on('message', onMessage);
    subscriber.on('ready', onChange);
    subscriber.subscribe(channel).catch(() => undefined);
    return {
      async close() {
        subscriber.off('message', onMessage);
        subscriber.off('ready', onChange);
      },
    };
  };
}
