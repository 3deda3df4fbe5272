import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../../logger.ts';
import { redactDeep } from '../redact-secrets.ts';

export type LiveEventType =
  'dr.state' | 'job.progress' | 'health.transition' | 'incident.opened' | 'incident.updated' | 'incident.timeline';

export interface LiveEvent {
  type: LiveEventType;
  at: string;
  /** The instance the event happened on. */
  instanceId: string;
  incidentId?: string;
  data: unknown;
}

/**
 * Live events for the SSE streams. Published locally at once and through Redis pub/sub to every
 * other instance (an event from another instance arrives here without its origin's echo). With
 * Redis down, each instance still streams its own events; the status stream also re-reads on a
 * timer, so a missed message only delays a page by one period.
 */
export class EventHub {
  private readonly emitter = new EventEmitter();
  private readonly origin = randomUUID();

  constructor(private readonly deps: { publisher: Redis; subscriber: Redis; channel: string; logger: Logger; instanceId: string }) {
    this.emitter.setMaxListeners(0);
  }

  async start(): Promise<void> {
    this.deps.subscriber.on('message', (channel: string, raw: string) => {
      if (channel !== this.deps.channel) return;
      try {
        const { origin, event } = JSON.parse(raw) as { origin: string; event: LiveEvent };
        if (origin !== this.origin) this.emitter.emit('event', event);
      } catch {
        // Not ours; ignore.
      }
    });
    await this.deps.subscriber
      .subscribe(this.deps.channel)
      .catch((err: unknown) => this.deps.logger.warn({ err }, 'live events: Redis subscribe failed; local events only'));
  }

  publish(type: LiveEventType, data: unknown, incidentId?: string): void {
    const event: LiveEvent = {
      type,
      at: new Date().toISOString(),
      instanceId: this.deps.instanceId,
      ...(incidentId ? { incidentId } : {}),
      // Whatever a publisher passes (an alert's title, an update's text), the streams carry it redacted.
      data: redactDeep(data),
    };
    this.emitter.emit('event', event);
    this.deps.publisher.publish(this.deps.channel, JSON.stringify({ origin: this.origin, event })).catch(() => undefined);
  }

  subscribe(listener: (event: LiveEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
