import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.ts';

let warmed: Promise<void> | undefined;

/**
 * Prisma compiles its query engine (WebAssembly) on the first query of the process, holding the
 * event loop for about half a second. Done at start-up, before any probe runs, that pause cannot
 * time out a health probe later. The throwaway client points at a closed local port: it never
 * reaches (or waits on) a real database. Once per process; start-up takes about a second longer.
 */
export function warmUpPrisma(): Promise<void> {
  warmed ??= (async () => {
    const client = new PrismaClient({
      adapter: new PrismaPg({ connectionString: 'postgresql://warm-up@127.0.0.1:1/warm-up', connectionTimeoutMillis: 200, max: 1 }),
    });
    await client.drCanary.findFirst().catch(() => undefined);
    await client.$disconnect().catch(() => undefined);
    await settle();
  })();
  return warmed;
}

/** The compile leaves a tail (garbage collection, WebAssembly tier-up): wait until timers run on time again, bounded. */
async function settle(boundMs = 2000): Promise<void> {
  const until = performance.now() + boundMs;
  let calm = 0;
  while (calm < 10 && performance.now() < until) {
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 10));
    calm = performance.now() - started < 25 ? calm + 1 : 0;
  }
}
