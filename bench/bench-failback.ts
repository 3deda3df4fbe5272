// `npm run bench:failback`: the figures of the failback runbook, each against a baseline measured
// in the same run on the same clusters.
//  1. Planned switchover under steady uploads (API, read-only + fence + replay + promote + switch),
//     back and forth BENCH_SWITCHOVERS times: write unavailability and bytes lost. Baseline: the
//     bare server-side switch (pg_ctl stop -m fast of the primary, then pg_promote of the standby),
//     which has no write barrier and no check.
//  2. Rebuilding the old primary of a BENCH_REWIND_GB database after a failover: pg_rewind
//     (rebuild-primary.sh --rewind, until it streams) against pg_basebackup of the same database.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { migrate } from '../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import { countUnreadable, startClusterService, refusalSummary, startUploadLoop } from '../support/drill.ts';
import { startPgCluster, type PgCluster, type PgNode } from '../support/pg-cluster.ts';
import { startS3Server } from '../support/s3-server.ts';

const run = promisify(execFile);
const SWITCHOVERS = Number(process.env.BENCH_SWITCHOVERS ?? 6);
const REWIND_GB = Number(process.env.BENCH_REWIND_GB ?? 1);
const BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;

async function sql(node: PgNode, text: string): Promise<pg.QueryResultRow[]> {
  const client = new pg.Client({ connectionString: node.url() });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}
const asPostgres = (cmd: string, args: string[]) =>
  run(asRoot ? 'runuser' : cmd, asRoot ? ['-u', 'postgres', '--', cmd, ...args] : args, { maxBuffer: 16 << 20 });
const rebuild = (pgdata: string, source: PgNode, method: string) =>
  run(
    'bash',
    [join(__dirname, '..', 'scripts', 'dr', 'rebuild-primary.sh'), '--pgdata', pgdata, '--source', source.url(), method, '--confirm'],
    { maxBuffer: 16 << 20 },
  );
const timed = async (fn: () => Promise<unknown>) => {
  const started = performance.now();
  await fn();
  return Math.round(performance.now() - started);
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function switchovers(): Promise<void> {
  const cluster = await startPgCluster();
  const s3 = await startS3Server({ bucket: 'bench-failback' });
  const { service, token } = await startClusterService('bench-failback', cluster, s3);
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    const base = `http://127.0.0.1:${(await service.listen()).port}`;
    const uploads = startUploadLoop(base, 'bench/switchover', 2048);
    uploads.disaster(); // from here on, refusals are recorded
    // The client's view: the longest time without an acknowledged upload around each switchover.
    const ackTimes: number[] = [];
    let seen = 0;
    const sampler = setInterval(() => {
      if (uploads.acked.size !== seen) {
        seen = uploads.acked.size;
        ackTimes.push(performance.now());
      }
    }, 2);
    const longestGap = (from: number, to: number) => {
      const inside = ackTimes.filter((t) => t >= from && t <= to);
      const before = ackTimes.filter((t) => t < from).at(-1) ?? from;
      const points = [before, ...inside];
      let gap = 0;
      for (let k = 1; k < points.length; k += 1) gap = Math.max(gap, points[k]! - points[k - 1]!);
      return Math.round(gap);
    };
    const clientGaps: number[] = [];
    const unavailable: number[] = [];
    let lost = 0;
    let to: 'primary' | 'replica' = 'replica';
    for (let i = 0; i < SWITCHOVERS; i += 1) {
      await new Promise((r) => setTimeout(r, 500));
      const called = performance.now();
      const res = await fetch(`${base}/admin/database/switchover`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ to, confirm: 'switchover' }),
      });
      const body = (await res.json()) as { writeUnavailableMs: number; bytesLost: number; steps: { name: string; ms: number }[] };
      if (res.status !== 200) throw new Error(`switchover ${i + 1} failed: ${JSON.stringify(body)}`);
      unavailable.push(body.writeUnavailableMs);
      // Until the first acknowledgement after the answer (bounded: 5 s).
      const answered = performance.now();
      while (ackTimes.filter((t) => t > answered).length === 0 && performance.now() - answered < 5000)
        await new Promise((r) => setTimeout(r, 5));
      clientGaps.push(longestGap(called, performance.now()));
      console.log(
        `  switchover ${i + 1} to ${to}: ${body.writeUnavailableMs} ms without writes (client: ${clientGaps.at(-1)} ms between acknowledgements) (${body.steps.map((x) => `${x.name} ${x.ms}`).join(', ')})`,
      );
      lost += body.bytesLost;
      const [newPrimary, old] = to === 'replica' ? [cluster.replica, cluster.primary] : [cluster.primary, cluster.replica];
      await rebuild(old.dataDir, newPrimary, '--rewind');
      to = to === 'replica' ? 'primary' : 'replica';
    }
    clearInterval(sampler);
    await uploads.stop();
    const missing = await countUnreadable(base, uploads.acked);

    // Baseline: the same switch done on the servers alone (stop -m fast waits until the standby has
    // the WAL; then promote), no API, no barrier, no checks.
    const [p, s] = to === 'replica' ? [cluster.primary, cluster.replica] : [cluster.replica, cluster.primary];
    const bare = await timed(async () => {
      await p.stop('fast');
      await sql(s, 'SELECT pg_promote(true, 60)');
    });
    console.log(`\nPlanned switchover under steady uploads (${SWITCHOVERS} times, back and forth, each followed by a pg_rewind rebuild)`);
    console.log(
      `  write unavailability: median ${median(unavailable)} ms, max ${Math.max(...unavailable)} ms  (all: ${unavailable.join(', ')})`,
    );
    console.log(
      `  as the client saw it, longest time between acknowledged uploads: median ${median(clientGaps)} ms, max ${Math.max(...clientGaps)} ms`,
    );
    console.log(
      `  baseline, bare server switch (pg_ctl stop -m fast + pg_promote): ${bare} ms; median ratio ${(median(unavailable) / bare).toFixed(2)}`,
    );
    console.log(`  goal: under 1000 ms (Patroni's switchover on this machine: 1600 ms)`);
    console.log(
      `  bytes lost: ${lost}; uploads acknowledged ${uploads.acked.size}, missing afterwards ${missing}; refused ${JSON.stringify(refusalSummary(uploads.refused).byCode)}`,
    );
  } finally {
    await service.stop();
    await s3.destroy();
    await cluster.destroy();
  }
}

async function rewindLarge(): Promise<void> {
  const cluster: PgCluster = await startPgCluster();
  try {
    // pgbench scale 68 is about 1 GB.
    const scale = String(Math.max(1, Math.round(68 * REWIND_GB)));
    const loadMs = await timed(() =>
      asPostgres(join(BIN, 'pgbench'), [
        '-i',
        '-q',
        '-s',
        scale,
        '-h',
        '127.0.0.1',
        '-p',
        String(cluster.primary.port),
        '-U',
        'postgres',
        'postgres',
      ]),
    );
    const size = Number((await sql(cluster.primary, 'SELECT pg_database_size(current_database())::bigint AS b'))[0]!.b);
    await sql(cluster.primary, 'CHECKPOINT');
    // Wait until the standby has it all, then a failover that leaves the old primary diverged.
    for (;;) {
      const [r] = await sql(
        cluster.primary,
        'SELECT coalesce(bool_and(replay_lsn >= pg_current_wal_lsn()), false) AS done FROM pg_stat_replication',
      );
      if (r!.done) break;
      await new Promise((res) => setTimeout(res, 500));
    }
    await cluster.replica.stop('fast');
    await sql(cluster.primary, 'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 10000');
    await cluster.primary.stop('immediate');
    await cluster.replica.start();
    await sql(cluster.replica, 'SELECT pg_promote(true, 60)');
    await sql(cluster.replica, 'UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid <= 20000');

    const rewindMs = await timed(() => rebuild(cluster.primary.dataDir, cluster.replica, '--rewind'));
    await cluster.primary.stop('fast');
    const basebackupMs = await timed(() => rebuild(cluster.primary.dataDir, cluster.replica, '--basebackup'));
    console.log(
      `\nRebuilding the old primary of a ${(size / 1024 ** 3).toFixed(2)} GB database after a failover (pgbench -s ${scale}, loaded in ${loadMs} ms)`,
    );
    console.log(`  rebuild-primary.sh --rewind (pg_rewind until streaming):     ${rewindMs} ms  (goal: under 10000 ms)`);
    console.log(`  baseline, rebuild-primary.sh --basebackup (full copy):        ${basebackupMs} ms`);
    console.log(`  ratio pg_rewind / pg_basebackup: ${(rewindMs / basebackupMs).toFixed(2)}`);
  } finally {
    await cluster.destroy();
  }
}

async function main(): Promise<void> {
  if (process.env.BENCH_ONLY !== 'rewind') await switchovers();
  if (process.env.BENCH_ONLY !== 'switchover') await rewindLarge();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
