import type { Logger } from '../../logger.ts';

/** The one Redis command a schedule needs (the port); an ioredis client is one. */
export interface SlotClaimRedis {
  set(key: string, value: string, exToken: 'EX', seconds: number, nxToken: 'NX'): Promise<'OK' | null>;
}

/**
 * Runs `fire` once per interval across every worker: each interval slot is claimed in Redis with
 * SET NX, so however many workers run, exactly one of them fires it.
 */
export class IntervalSchedule {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      redis: SlotClaimRedis;
      key: string;
      intervalSeconds: number;
      checkMs: number;
      fire: () => Promise<void>;
      logger: Logger;
    },
  ) {}

  async tick(now = Date.now()): Promise<boolean> {
    const slot = Math.floor(now / (this.deps.intervalSeconds * 1000));
    const won = await this.deps.redis.set(`${this.deps.key}:${slot}`, '1', 'EX', this.deps.intervalSeconds * 2, 'NX');
    if (won !== 'OK') return false;
    await this.deps.fire();
    return true;
  }

  start(): void {
    if (this.deps.intervalSeconds <= 0) return;
    this.timer = setInterval(() => {
      this.tick().catch((err: unknown) => this.deps.logger.warn({ err }, 'scheduled job not started'));
    }, this.deps.checkMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
