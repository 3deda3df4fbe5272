// CPU per media PUT of each process (API, S3 servers, load generator, PostgreSQL, Redis), read from
// /proc around fixed batches of PUTs through the API and straight to S3 (16 KiB, concurrency 16).
import { fork, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Client } from 'minio';
import pg from 'pg';
import { createScratchDatabase } from '../support/scratch-database.ts';
import { load } from './load.ts';

const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString());
function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICK;
  } catch {
    return 0;
  }
}
const group = (pids: () => number[]) => () => pids().reduce((s, p) => s + cpuMs(p), 0);

async function main(): Promise<void> {
  const db = await createScratchDatabase('sav3_bench_putcpu');
  const started = <T>(child: ChildProcess) =>
    new Promise<T>((resolve, reject) => {
      child.once('message', (m) => resolve(m as T));
      child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
    });
  const s3Child = fork(join(__dirname, 'media-bench-s3.ts'), { execArgv: ['--import', 'tsx'] });
  const servers = await started<{ primary: { endpoint: string; bucket: string; accessKey: string; secretKey: string } }>(s3Child);
  const child = fork(join(__dirname, 'media-bench-server.ts'), {
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/bench-prof'] : [])],
    env: {
      ...process.env,
      BENCH_DATABASE_URL: db.url,
      BENCH_ADMIN_TOKENS: `bench:operator:${randomBytes(24).toString('hex')}`,
      BENCH_S3: JSON.stringify(servers),
    },
  });
  const { api: port } = await started<{ api: number }>(child);
  const api = `http://127.0.0.1:${port}`;
  const url = new URL(servers.primary.endpoint);
  const s3 = new Client({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: false,
    accessKey: servers.primary.accessKey,
    secretKey: servers.primary.secretKey,
    region: 'us-east-1',
    pathStyle: true,
  });
  const body = Buffer.alloc(16 * 1024, 7);
  const directUrls = await Promise.all(
    Array.from({ length: 4096 }, (_, i) => s3.presignedPutObject(servers.primary.bucket, `direct/many/${i}.bin`, 3600)),
  );
  // PostgreSQL: the backends serving the scratch database (the API's pool), not the whole server,
  // which other work on the machine may use.
  const backends = async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const { rows } = await c.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
    );
    await c.end();
    return rows.map((r) => r.pid);
  };
  let pgPids: number[] = [];
  const meters: Record<string, () => number> = {
    api: () => cpuMs(child.pid!),
    s3: () => cpuMs(s3Child.pid!),
    loadgen: () => cpuMs(process.pid),
    postgres: group(() => pgPids),
    redis: group(() => execFileSync('pgrep', ['-x', 'redis-server']).toString().trim().split('\n').map(Number)),
  };
  const opts = { concurrency: 16, durationMs: Number(process.env.CPU_MS ?? 3000), method: 'PUT', body: () => body };
  let n = 0;
  const sides: Record<string, () => Promise<{ requests: number }>> = {
    'api new keys': () => load(() => `${api}/media/bench/many/${(n += 1)}.bin`, opts),
    'direct new keys': () => load(() => directUrls[(n += 1) % directUrls.length]!, opts),
    'api one key': () => load(`${api}/media/bench/put.bin`, opts),
    'direct one key': () => load(directUrls[0]!, opts),
  };
  await sides['api new keys']!();
  await sides['direct new keys']!();
  await sides['api one key']!();
  pgPids = await backends();
  const only = process.env.CPU_ONLY;
  for (let round = 0; round < Number(process.env.CPU_ROUNDS ?? 2); round += 1) {
    for (const [name, run] of Object.entries(sides)) {
      if (only && !name.includes(only)) continue;
      const before = Object.fromEntries(Object.entries(meters).map(([k, f]) => [k, f()]));
      const t = performance.now();
      const { requests } = await run();
      const wall = performance.now() - t;
      const per = Object.entries(meters).map(([k, f]) => `${k} ${((f() - before[k]!) / requests).toFixed(2)}`);
      pgPids = await backends(); // a pool connection replaced since is counted from the next round
      console.log(`${name.padEnd(16)} ${((requests / wall) * 1000).toFixed(0).padStart(5)} req/s  ms CPU/req: ${per.join('  ')}`);
    }
  }
  child.disconnect();
  if (process.env.BENCH_CPU_PROF) await new Promise((r) => setTimeout(r, 3000));
  child.kill();
  s3Child.disconnect();
  await new Promise((r) => s3Child.once('exit', r));
  await db.drop();
}
void main();
