/**
 * Slows down token guessing: after `maxFailures` failed attempts from one address within the
 * window, that address is refused (429) for a back-off that doubles with each further failure,
 * up to `maxBlockMs`. Memory is bounded by forgetting the oldest addresses.
 */
export class FailedAuthLimiter {
  private readonly failures = new Map<string, { count: number; first: number; blockedUntil: number }>();

  constructor(
    private readonly options: { maxFailures: number; windowMs: number; maxBlockMs: number; maxEntries?: number; now?: () => number } = {
      maxFailures: 5,
      windowMs: 60_000,
      maxBlockMs: 60_000,
    },
  ) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** Seconds until this address may try again, or 0. */
  retryAfter(address: string): number {
    const entry = this.failures.get(address);
    if (!entry) return 0;
    const wait = entry.blockedUntil - this.now();
    return wait > 0 ? Math.ceil(wait / 1000) : 0;
  }

  fail(address: string): void {
    const now = this.now();
    let entry = this.failures.get(address);
    if (!entry || now - entry.first > this.options.windowMs) entry = { count: 0, first: now, blockedUntil: 0 };
    entry.count += 1;
    const over = entry.count - this.options.maxFailures;
    if (over >= 0) entry.blockedUntil = now + Math.min(1000 * 2 ** over, this.options.maxBlockMs);
    this.failures.delete(address);
    this.failures.set(address, entry);
    if (this.failures.size > (this.options.maxEntries ?? 10_000)) {
      const oldest = this.failures.keys().next().value;
      if (oldest !== undefined) this.failures.delete(oldest);
    }
  }

  succeed(address: string): void {
    this.failures.delete(address);
  }
}
