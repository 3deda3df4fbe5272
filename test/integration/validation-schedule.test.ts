import { Redis } from 'ioredis';
import { IntervalSchedule } from '../../src/services/jobs/validation-schedule.ts';
import { captureLogger } from '../support/log-capture.ts';
import { uniquePrefix } from '../support/instance.ts';

describe('the validation schedule across workers', () => {
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  afterAll(() => redis.quit());

  it('of three workers ticking through the same slots, exactly one fires each slot', async () => {
    const key = `${uniquePrefix()}schedule:test`;
    const fired: number[] = [];
    const { logger } = captureLogger('silent');
    const schedules = [0, 1, 2].map(
      (i) => new IntervalSchedule({ redis, key, intervalSeconds: 60, checkMs: 1000, logger, fire: async () => void fired.push(i) }),
    );
    const start = Math.floor(Date.now() / 60_000) * 60_000;
    for (let slot = 0; slot < 5; slot += 1) {
      // Every worker ticks several times within each slot, interleaved.
      await Promise.all(schedules.flatMap((s) => [s.tick(start + slot * 60_000 + 1), s.tick(start + slot * 60_000 + 30_000)]));
    }
    expect(fired).toHaveLength(5);
  });

  it('is off when the interval is 0', () => {
    const s = new IntervalSchedule({
      redis,
      key: 'unused',
      intervalSeconds: 0,
      checkMs: 10,
      logger: captureLogger('silent').logger,
      fire: async () => undefined,
    });
    s.start();
    expect((s as unknown as { timer: unknown }).timer).toBeUndefined();
  });
});
