// `npm run bench`: throughput and p99 of the API's hot routes as ratios against a bare Express
// route measured in the same run, and /health/database latency while the database hangs.
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { createScratchDatabase } from '../support/scratch-database.ts';
import { load, type LoadResult } from './load.ts';

const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 5000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);

function row(name: string, r: LoadResult, baseline?: LoadResult): string {
  const ratio = baseline ? `${((r.rps / baseline.rps) * 100).toFixed(1)}%` : 'baseline';
  return `${name.padEnd(34)} ${r.rps.toFixed(0).padStart(8)} req/s  p50 ${r.p50.toFixed(2).padStart(7)} ms  p99 ${r.p99.toFixed(2).padStart(7)} ms  errors ${String(r.errors).padStart(4)}  ${ratio}`;
}

async function main(): Promise<void> {
  // A fresh, migrated database of its own on the machine's PostgreSQL, dropped at the end.
  const db = await createScratchDatabase('sav3_bench');
  const child = fork(join(__dirname, 'bench-server.ts'), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_DATABASE_URL: db.url },
  });
  const ports = await new Promise<{ api: number; unguarded: number; hungApi: number; bare: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as never));
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
  });
  const api = `http://127.0.0.1:${ports.api}`;
  try {
    const put = await fetch(`${api}/media/bench/object.bin`, { method: 'PUT', body: Buffer.alloc(16 * 1024, 7) });
    if (put.status !== 201) throw new Error(`setup upload failed: ${put.status}`);
    const opts = { concurrency: CONCURRENCY, durationMs: DURATION_MS };
    await load(`http://127.0.0.1:${ports.bare}/bare`, { ...opts, durationMs: 1000 }); // warm-up
    const bare = await load(`http://127.0.0.1:${ports.bare}/bare`, opts);
    const ready = await load(`${api}/health/ready`, opts);
    const media = await load(`${api}/media/bench/object.bin`, opts);
    const guard = await guardCost(api, `http://127.0.0.1:${ports.unguarded}`);
    const hung = await load(`http://127.0.0.1:${ports.hungApi}/health/database`, { concurrency: 8, durationMs: 3000 });

    console.log(`\nconcurrency ${CONCURRENCY}, ${DURATION_MS} ms per route\n`);
    console.log(row('bare express GET /bare', bare));
    console.log(row('GET /health/ready', ready, bare));
    console.log(row('GET /media/{key} (16 KiB)', media, bare));
    console.log(
      `\n/health/database with a hung database (HEALTH_TIMEOUT_MS=200): p50 ${hung.p50.toFixed(1)} ms, p99 ${hung.p99.toFixed(1)} ms, max ${hung.max.toFixed(1)} ms over ${hung.requests} requests (bound: 300 ms)`,
    );
    console.log('\nread-only guard (mode off), with versus without the middleware, interleaved rounds:');
    for (const g of guard)
      console.log(
        `  ${g.route.padEnd(34)} with ${g.with.toFixed(0)} req/s, without ${g.without.toFixed(0)} req/s: median cost ${g.cost.toFixed(1)}% (goal: under 3%)`,
      );
    const readyRatio = ready.rps / bare.rps;
    console.log(
      `\n/health/ready at ${(readyRatio * 100).toFixed(1)}% of the bare route (goal: 80% or more): ${readyRatio >= 0.8 ? 'met' : 'NOT met'}`,
    );
    console.log(`/health/database under a hung database within its bound: ${hung.max <= 300 ? 'yes' : 'NO'}`);
  } finally {
    child.disconnect();
    child.kill();
    await new Promise((resolve) => child.once('exit', resolve));
    await db.drop();
  }
}

/**
 * Alternates the two builds in short paired rounds (order swapped every round) and reports the
 * median of the per-pair ratios, so drift and noise on a busy machine hit both builds alike.
 */
async function guardCost(withGuard: string, withoutGuard: string) {
  const routes = [
    { route: 'HEAD /media/{key} (read, cached)', path: '/media/bench/object.bin', method: 'HEAD' },
    { route: 'DELETE /media/{missing} (mutating)', path: '/media/bench/missing-object', method: 'DELETE' },
  ];
  const rounds = 10;
  const results = [];
  for (const r of routes) {
    const ratios: number[] = [];
    let withSum = 0;
    let withoutSum = 0;
    for (let round = 0; round < rounds; round += 1) {
      const opts = { concurrency: CONCURRENCY, durationMs: Math.max(300, (DURATION_MS * 2) / rounds), method: r.method };
      const first = round % 2 === 0 ? withGuard : withoutGuard;
      const second = round % 2 === 0 ? withoutGuard : withGuard;
      const a = (await load(`${first}${r.path}`, opts)).rps;
      const b = (await load(`${second}${r.path}`, opts)).rps;
      const [w, wo] = round % 2 === 0 ? [a, b] : [b, a];
      withSum += w;
      withoutSum += wo;
      ratios.push(w / wo);
    }
    ratios.sort((x, y) => x - y);
    const median = (ratios[rounds / 2 - 1]! + ratios[rounds / 2]!) / 2;
    results.push({ route: r.route, with: withSum / rounds, without: withoutSum / rounds, cost: (1 - median) * 100 });
  }
  return results;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
