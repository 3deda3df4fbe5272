import { FailedAuthLimiter } from '../../src/admin/failed-auth-limiter.ts';

describe('FailedAuthLimiter', () => {
  it('blocks an address after the allowed failures, doubling the wait up to the cap, and forgives on success', () => {
    let now = 0;
    const limiter = new FailedAuthLimiter({ maxFailures: 3, windowMs: 60_000, maxBlockMs: 8000, now: () => now });
    limiter.fail('a');
    limiter.fail('a');
    expect(limiter.retryAfter('a')).toBe(0);
    limiter.fail('a');
    expect(limiter.retryAfter('a')).toBe(1);
    limiter.fail('a');
    expect(limiter.retryAfter('a')).toBe(2);
    for (let i = 0; i < 5; i += 1) limiter.fail('a');
    expect(limiter.retryAfter('a')).toBe(8);
    expect(limiter.retryAfter('b')).toBe(0);
    now += 8000;
    expect(limiter.retryAfter('a')).toBe(0);
    limiter.succeed('a');
    limiter.fail('a');
    expect(limiter.retryAfter('a')).toBe(0);
  });

  it('forgets the oldest addresses beyond its bound', () => {
    const limiter = new FailedAuthLimiter({ maxFailures: 1, windowMs: 60_000, maxBlockMs: 60_000, maxEntries: 2 });
    limiter.fail('x');
    limiter.fail('y');
    limiter.fail('z');
    expect(limiter.retryAfter('x')).toBe(0);
    expect(limiter.retryAfter('z')).toBe(1);
  });
});
