import { createHash } from 'node:crypto';

/** Small helpers shared by tests, drills and benchmarks (never by the service itself). */

/** The hex sha256 of a body or string: what the media API reports and what tests compare. */
export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A TCP port nothing listens on right now: the service's own helper (scratch clusters use it). */
export { freePort } from '../src/adapters/net.ts';

/**
 * Calls `fn` until `ok` holds for its answer or `timeoutMs` has passed, then returns the last
 * answer: the caller's assertion on it is what fails, with the value it actually saw.
 */
export async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 5000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (ok(value) || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * A small seeded PRNG (mulberry32): every random choice of a run (keys, bodies, operations,
 * pauses, the fault schedule) comes from one seed, so a failing run can be replayed with
 * TORTURE_SEED or CHAOS_SEED. Each writer and the chaos loop draw from a stream of their own (derived from the
 * seed), so one stream's choices do not depend on how the others interleave.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
