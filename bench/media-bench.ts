// `npm run bench:media`: the versioned media layout against direct S3 in the same run. The S3
// servers run in a process of their own, the API in another, as in a deployment.
// - GET and PUT of a 16 KiB body through the API versus a presigned GET/PUT of the same bytes
//   straight to the same S3 server, in interleaved rounds (median of the per-round ratios); PUT
//   both to one key (every PUT an overwrite) and to a new key per PUT;
// - a sync of 2,000 small objects between the two S3 servers versus `rclone sync` of the same
//   objects between the same two servers.
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { Client } from 'minio';
import { createScratchDatabase } from '../support/scratch-database.ts';
import { load } from './load.ts';

const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 1500);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
const SYNC_OBJECTS = Number(process.env.BENCH_SYNC_OBJECTS ?? 2000);
const run = promisify(execFile);

interface S3Info {
  endpoint: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
}

function client(s3: S3Info): Client {
  const url = new URL(s3.endpoint);
  return new Client({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: false,
    accessKey: s3.accessKey,
    secretKey: s3.secretKey,
    region: 'us-east-1',
    pathStyle: true,
  });
}

async function paired(name: string, api: () => Promise<number>, direct: () => Promise<number>) {
  const ratios: number[] = [];
  let apiSum = 0;
  let directSum = 0;
  for (let round = 0; round < ROUNDS; round += 1) {
    // The order alternates, so drift on a busy machine hits both alike.
    let apiRps: number;
    let directRps: number;
    if (round % 2 === 0) {
      apiRps = await api();
      directRps = await direct();
    } else {
      directRps = await direct();
      apiRps = await api();
    }
    apiSum += apiRps;
    directSum += directRps;
    ratios.push(apiRps / directRps);
  }
  ratios.sort((p, q) => p - q);
  const mid = Math.floor(ratios.length / 2);
  const median = ratios.length % 2 ? ratios[mid]! : (ratios[mid - 1]! + ratios[mid]!) / 2;
  console.log(
    `${name.padEnd(12)} API ${(apiSum / ROUNDS).toFixed(0).padStart(6)} req/s   direct S3 ${(directSum / ROUNDS).toFixed(0).padStart(6)} req/s   median ratio ${median.toFixed(2)}`,
  );
  return median;
}

function rcloneEnv(name: string, s3: S3Info): Record<string, string> {
  const p = `RCLONE_CONFIG_${name.toUpperCase()}_`;
  return {
    [`${p}TYPE`]: 's3',
    [`${p}PROVIDER`]: 'Other',
    [`${p}ACCESS_KEY_ID`]: s3.accessKey,
    [`${p}SECRET_ACCESS_KEY`]: s3.secretKey,
    [`${p}ENDPOINT`]: s3.endpoint,
    [`${p}REGION`]: 'us-east-1',
    [`${p}FORCE_PATH_STYLE`]: 'true',
  };
}

async function main(): Promise<void> {
  const db = await createScratchDatabase('sav3_bench_media');
  const token = randomBytes(24).toString('hex');
  const started = <T>(child: ChildProcess) =>
    new Promise<T>((resolve, reject) => {
      child.once('message', (m) => resolve(m as T));
      child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
    });
  const s3Child = fork(join(__dirname, 'media-bench-s3.ts'), { execArgv: ['--import', 'tsx'] });
  const servers = await started<{ primary: S3Info; backup: S3Info }>(s3Child);
  const child = fork(join(__dirname, 'media-bench-server.ts'), {
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/bench-prof'] : [])],
    env: { ...process.env, BENCH_DATABASE_URL: db.url, BENCH_ADMIN_TOKENS: `bench:operator:${token}`, BENCH_S3: JSON.stringify(servers) },
  });
  const info = { ...(await started<{ api: number }>(child)), ...servers };
  const api = `http://127.0.0.1:${info.api}`;
  try {
    const body = Buffer.alloc(16 * 1024, 7);
    {
      const res = await fetch(`${api}/media/bench/get.bin`, { method: 'PUT', body });
      if (res.status !== 201) throw new Error(`setup upload failed: ${res.status} ${await res.text()}`);
    }
    const s3 = client(info.primary);
    await s3.putObject(info.primary.bucket, 'direct/get.bin', body, body.length);
    const getUrl = await s3.presignedGetObject(info.primary.bucket, 'direct/get.bin', 3600);
    const putUrl = await s3.presignedPutObject(info.primary.bucket, 'direct/put.bin', 3600);
    const opts = { concurrency: CONCURRENCY, durationMs: DURATION_MS };
    await load(`${api}/media/bench/get.bin`, { ...opts, durationMs: 500 });
    await load(getUrl, { ...opts, durationMs: 500 });

    console.log(`\nconcurrency ${CONCURRENCY}, ${ROUNDS} interleaved rounds of ${DURATION_MS} ms, 16 KiB bodies\n`);
    // BENCH_ONLY=put-new-keys runs only that pair (for a CPU profile of the write path).
    const only = process.env.BENCH_ONLY;
    const skip = async () => NaN;
    const getRatio = only
      ? NaN
      : await paired(
          'GET 16 KiB',
          async () => (await load(`${api}/media/bench/get.bin`, opts)).rps,
          async () => (await load(getUrl, opts)).rps,
        );
    const putRatio = only
      ? await skip()
      : await paired(
          'PUT 16 KiB',
          async () => (await load(`${api}/media/bench/put.bin`, { ...opts, method: 'PUT', body: () => body })).rps,
          async () => (await load(putUrl, { ...opts, method: 'PUT', body: () => body })).rps,
        );
    // The same bodies to a new key per request, on both sides: the API's commits then take no
    // turns on one key's row lock (above, every PUT overwrites one key, so commits, each waiting
    // for its WAL flush, run one at a time).
    let n = 0;
    const directUrls = await Promise.all(
      Array.from({ length: 4096 }, (_, i) => s3.presignedPutObject(info.primary.bucket, `direct/many/${i}.bin`, 3600)),
    );
    const putManyRatio = await paired(
      'PUT new keys',
      async () => (await load(() => `${api}/media/bench/many/${(n += 1)}.bin`, { ...opts, method: 'PUT', body: () => body })).rps,
      async () => (await load(() => directUrls[(n += 1) % directUrls.length]!, { ...opts, method: 'PUT', body: () => body })).rps,
    );
    const goals = () => {
      console.log(`\nGET at ${getRatio.toFixed(2)} of direct S3 (goal 0.8): ${getRatio >= 0.8 ? 'met' : 'NOT met'}`);
      console.log(`PUT at ${putRatio.toFixed(2)} of direct S3, one key (goal 0.6): ${putRatio >= 0.6 ? 'met' : 'NOT met'}`);
      console.log(
        `PUT at ${putManyRatio.toFixed(2)} of direct S3, a new key per PUT (goal 0.6): ${putManyRatio >= 0.6 ? 'met' : 'NOT met'}`,
      );
    };

    if (process.env.BENCH_SKIP_SYNC) return goals();
    // Sync: SYNC_OBJECTS small objects known to the metadata, primary -> backup; rclone copies the
    // same objects between the same two servers (into a bucket of their own on the backup).
    child.send({ seed: SYNC_OBJECTS });
    await new Promise((resolve) => child.once('message', resolve));
    let rcloneMs = NaN;
    let rcloneVersion = 'rclone not installed';
    try {
      rcloneVersion = (await run('rclone', ['version'])).stdout.split('\n')[0]!;
      // Plain http endpoints: an AWS_CA_BUNDLE from the environment would make rclone's S3 client fail.
      const { AWS_CA_BUNDLE: _ca, ...base } = process.env;
      const env = { ...base, ...rcloneEnv('src', info.primary), ...rcloneEnv('dst', info.backup) };
      const t = performance.now();
      // Into a prefix of its own on the backup bucket (the API's sync writes under v/).
      await run(
        'rclone',
        ['sync', `src:${info.primary.bucket}/v`, `dst:${info.backup.bucket}/rclone/v`, '--transfers', '16', '--checkers', '16'],
        { env, maxBuffer: 1 << 24 },
      );
      rcloneMs = performance.now() - t;
    } catch (err) {
      console.log(`rclone: ${err instanceof Error ? err.message.split('\n').slice(0, 6).join(' | ') : String(err)}`);
    }
    const t = performance.now();
    const res = await fetch(`${api}/admin/media/sync`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ from: 'primary', to: 'backup' }),
    });
    const syncMs = performance.now() - t;
    const sync = (await res.json()) as { copied?: number; status?: string; error?: unknown };
    console.log(
      `\nsync of ${SYNC_OBJECTS} small objects primary -> backup: API ${syncMs.toFixed(0)} ms (${res.status}, ${sync.status ?? JSON.stringify(sync.error)}, copied ${sync.copied}); ${rcloneVersion} sync --transfers 16 --checkers 16: ${rcloneMs.toFixed(0)} ms; rclone time / API time ${(rcloneMs / syncMs).toFixed(2)}`,
    );
    goals();
    console.log(`sync faster than rclone: ${syncMs < rcloneMs ? 'yes' : 'NO'}`);
  } finally {
    child.disconnect();
    if (process.env.BENCH_CPU_PROF) await new Promise((r) => setTimeout(r, 3000));
    child.kill();
    await new Promise((resolve) => child.once('exit', resolve));
    s3Child.disconnect();
    await new Promise((resolve) => s3Child.once('exit', resolve));
    await db.drop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
