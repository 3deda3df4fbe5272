// `npm run drill:database`: the runbook's database scenario on local clusters, timed. Media uploads
// run in a loop; the primary is killed (immediate stop); the runbook scripts enable read-only mode,
// promote the replica, switch every instance to it and lift read-only mode. Prints the RTO (kill to
// the first accepted write), the writes refused meanwhile, and proves every acknowledged upload is
// there afterwards with its sha256, and that no refused upload left content behind.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config/config.ts';
import { migrate } from '../src/database/migrator.ts';
import { createLogger } from '../src/logger.ts';
import { createService, MIGRATIONS_DIR } from '../src/service.ts';
import { startPgCluster } from '../support/pg-cluster.ts';
import { startS3Server } from '../support/s3-server.ts';

const run = promisify(execFile);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function main(): Promise<void> {
  const cluster = await startPgCluster();
  const s3 = await startS3Server({ bucket: 'drill-media' });
  const token = randomBytes(24).toString('base64url');
  const service = await createService(
    loadConfig({
      DATABASE_URL: cluster.primary.url(),
      DATABASE_REPLICA_URL: cluster.replica.url(),
      REDIS_URL: process.env.REDIS_URL,
      MEDIA_PRIMARY_ENDPOINT: s3.endpoint,
      MEDIA_PRIMARY_ACCESS_KEY: s3.accessKey,
      MEDIA_PRIMARY_SECRET_KEY: s3.secretKey,
      MEDIA_PRIMARY_BUCKET: s3.bucket,
      ADMIN_TOKENS: `drill:operator:${token}`,
      PORT: '0',
      HOST: '127.0.0.1',
      HEALTH_TIMEOUT_MS: '500',
      INSTANCE_ID: 'drill-1',
    }),
    createLogger('silent'),
    { redisKeyPrefix: `drill:${Date.now()}:` },
  );
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    const base = `http://127.0.0.1:${(await service.listen()).port}`;
    const env = { ...process.env, SAV3_API_URL: base, SAV3_ADMIN_TOKEN: token };
    const script = async (name: string, args: string[]) => {
      const started = performance.now();
      await run('bash', [join(__dirname, 'dr', name), ...args], { env });
      return Math.round(performance.now() - started);
    };

    const acked = new Map<string, string>();
    const refused: { status: number; retryAfter: string | null; code: string }[] = [];
    let killedAt = 0;
    let firstWriteAfterKill = 0;
    let running = true;
    let n = 0;
    const loop = (async () => {
      while (running) {
        const key = `drill/upload-${(n += 1)}`;
        const body = randomBytes(2048);
        const res = await fetch(`${base}/media/${key}`, { method: 'PUT', body }).catch(() => undefined);
        if (res?.status === 201) {
          acked.set(key, sha(body));
          if (killedAt && !firstWriteAfterKill) firstWriteAfterKill = performance.now();
        } else if (res) {
          const json = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
          if (killedAt) refused.push({ status: res.status, retryAfter: res.headers.get('retry-after'), code: json.error?.code ?? '?' });
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();

    await new Promise((r) => setTimeout(r, 1000));
    const beforeKill = acked.size;
    await cluster.primary.stop('immediate');
    killedAt = performance.now();
    const steps: [string, number][] = [];
    steps.push(['enable-readonly-mode.sh', await script('enable-readonly-mode.sh', ['--reason', 'drill: primary killed'])]);
    steps.push(['promote-replica.sh', await script('promote-replica.sh', ['--max-lag', '3600'])]);
    steps.push(['switch-database-connection.sh --to replica', await script('switch-database-connection.sh', ['--to', 'replica'])]);
    steps.push(['disable-readonly-mode.sh', await script('disable-readonly-mode.sh', ['--reason', 'drill: replica promoted'])]);
    const deadline = performance.now() + 10_000;
    while (!firstWriteAfterKill && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 500));
    running = false;
    await loop;

    let missing = 0;
    for (const [key, digest] of acked) {
      const res = await fetch(`${base}/media/${key}`);
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status !== 200 || sha(body) !== digest) missing += 1;
    }
    let orphans = 0;
    for await (const object of service.stores.get('primary')!.list('drill/')) if (!acked.has(object.key)) orphans += 1;
    const withoutRetryAfter = refused.filter((r) => r.status !== 503 || r.retryAfter === null).length;
    const rtoMs = firstWriteAfterKill ? Math.round(firstWriteAfterKill - killedAt) : NaN;

    console.log('\nDatabase failover drill');
    for (const [name, ms] of steps) console.log(`  ${name.padEnd(44)} ${String(ms).padStart(6)} ms`);
    console.log(`  RTO (primary killed → first accepted write)  ${String(rtoMs).padStart(6)} ms   (goal: under 5000 ms)`);
    console.log(`  uploads acknowledged: ${acked.size} (${beforeKill} before the kill)`);
    const byCode = refused.reduce<Record<string, number>>((acc, r) => ({ ...acc, [`${r.status} ${r.code}`]: (acc[`${r.status} ${r.code}`] ?? 0) + 1 }), {});
    console.log(`  uploads refused meanwhile: ${refused.length} ${JSON.stringify(byCode)}; without 503 + Retry-After: ${withoutRetryAfter}`);
    console.log(`  acknowledged uploads missing or wrong afterwards: ${missing}`);
    console.log(`  refused uploads that left content behind: ${orphans}`);
    const ok = missing === 0 && orphans === 0 && withoutRetryAfter === 0 && rtoMs < 5000;
    console.log(ok ? '\ndrill passed' : '\ndrill FAILED');
    process.exitCode = ok ? 0 : 1;
  } finally {
    await service.stop();
    await s3.destroy();
    await cluster.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
