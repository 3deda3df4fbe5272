// `npm run bench:restore`: backup, validation and point-in-time restore of a generated database of
// at least 1 GB (pgbench -i -s 70), against pgBackRest alone and a plain `cp -a` of the same data
// directory, in the same run. Reports times and ratios:
//   restore throughput / cp -a throughput (goal ≥ 0.7), a whole validation job (goal < 10 s),
//   the service's overhead over pgBackRest alone for backup and validation (goal < 20 %).
// BENCH_SCALE (default 70) sets pgbench's scale; BENCH_PROCESS_MAX (default 2) pgBackRest's processes.
import { execFile } from 'node:child_process';
import { rmSync, mkdirSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config/config.ts';
import { migrate } from '../src/database/migrator.ts';
import { createLogger } from '../src/logger.ts';
import { MIGRATIONS_DIR } from '../src/service.ts';
import { createWorker } from '../src/worker-service.ts';
import { JobQueue } from '../src/jobs/job-queue.ts';
import { startPgCluster } from '../support/pg-cluster.ts';
import { createPgBackRestRepo } from '../support/pgbackrest-repo.ts';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;
const BIN = '/usr/lib/postgresql/15/bin';
const SCALE = Number(process.env.BENCH_SCALE ?? 70);
const PROCESS_MAX = Number(process.env.BENCH_PROCESS_MAX ?? 2);

const asPostgres = (file: string, args: string[]) => run(asRoot ? 'runuser' : file, asRoot ? ['-u', 'postgres', '--', file, ...args] : args, { maxBuffer: 64 * 1024 * 1024 });
async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const v = await fn();
  return [(performance.now() - t) / 1000, v];
}
const du = async (dir: string) => Number((await run('du', ['-sb', dir])).stdout.split('\t')[0]);

async function main(): Promise<void> {
  const cluster = await startPgCluster();
  await cluster.replica.stop('fast'); // the bench measures the primary only
  const repo = await createPgBackRestRepo(cluster.primary, cluster.dir, { extraGlobal: [`process-max=${PROCESS_MAX}`] });
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const prefix = `bench-restore:${Date.now()}:`;
  const scratch = join(cluster.dir, 'scratch');
  mkdirSync(scratch);
  if (asRoot) chownSync(scratch, 101, 104);
  const results: Record<string, number | string> = {};
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    const [initS] = await timed(() => asPostgres(join(BIN, 'pgbench'), ['-i', '-s', String(SCALE), '-q', '-h', '127.0.0.1', '-p', String(cluster.primary.port), '-U', 'postgres', 'postgres']));
    await asPostgres(join(BIN, 'psql'), ['-h', '127.0.0.1', '-p', String(cluster.primary.port), '-U', 'postgres', '-c', 'CHECKPOINT', 'postgres']);
    const bytes = await du(cluster.primary.dataDir);
    results.databaseBytes = bytes;
    results.pgbenchInitSeconds = Number(initS.toFixed(1));

    // Baseline: a plain copy of the same data directory.
    const copy = join(cluster.dir, 'copy');
    const [cpS] = await timed(() => run('cp', ['-a', cluster.primary.dataDir, copy]));
    rmSync(copy, { recursive: true, force: true });

    // pgBackRest alone.
    const [rawBackupS] = await timed(() => repo.exec(['backup', '--type=full']));
    const rawDir = join(scratch, 'raw');
    mkdirSync(rawDir);
    if (asRoot) chownSync(rawDir, 101, 104);
    const [rawRestoreS] = await timed(() => repo.exec(['restore', `--pg1-path=${rawDir}`, '--type=immediate', '--target-action=promote', '--archive-mode=off']));
    rmSync(rawDir, { recursive: true, force: true });

    // The service: backup and validation as worker jobs through the queue.
    const config = loadConfig({
      DATABASE_URL: cluster.primary.url(),
      REDIS_URL: process.env.REDIS_URL,
      MEDIA_PRIMARY_ENDPOINT: 'http://127.0.0.1:9',
      ...repo.env,
      BACKUP_SCRATCH_DIR: join(scratch, 'jobs'),
      WORKER_PORT: '0',
      HOST: '127.0.0.1',
      WORKER_POLL_MS: '20',
    });
    const worker = createWorker(config, createLogger('silent'), { redisKeyPrefix: prefix });
    await worker.listen();
    const queue = new JobQueue(redis, prefix);
    const job = async (kind: string, input: unknown) => {
      const { id } = await queue.enqueue(kind, input, { requestedBy: 'bench' });
      for (;;) {
        const j = await queue.get(id);
        if (j?.status === 'succeeded') return j;
        if (j?.status === 'failed') throw new Error(`${kind} failed: ${j.error}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const [jobBackupS] = await timed(() => job('backup', { type: 'full' }));
    const [jobValidateS, validation] = await timed(() => job('backup.validate', { backup: 'latest' }));
    const report = validation.result as { timings: { restoreMs: number; recoveryMs: number; checksMs: number; teardownMs: number }; checks: { name: string; ms: number; ok: boolean }[]; bytes: number };
    await worker.stop();

    // Point-in-time restore of the primary itself (delta), through the restore script's code path.
    await asPostgres(join(BIN, 'psql'), ['-h', '127.0.0.1', '-p', String(cluster.primary.port), '-U', 'postgres', '-c', "SELECT pg_create_restore_point('bench-target')", '-c', 'SELECT pg_switch_wal()', 'postgres']);
    await repo.exec(['check']);
    await cluster.primary.stop('fast');
    const [pitrRestoreS] = await timed(() => repo.exec(['restore', '--delta', '--type=name', '--target=bench-target', '--target-action=promote']));
    const [pitrStartS] = await timed(() => cluster.primary.start());

    const mb = (b: number, s: number) => b / 1e6 / s;
    const restoreS = report.timings.restoreMs / 1000;
    Object.assign(results, {
      cpSeconds: Number(cpS.toFixed(2)),
      cpMBps: Number(mb(bytes, cpS).toFixed(0)),
      pgbackrestBackupSeconds: Number(rawBackupS.toFixed(2)),
      pgbackrestRestoreSeconds: Number(rawRestoreS.toFixed(2)),
      jobBackupSeconds: Number(jobBackupS.toFixed(2)),
      backupOverhead: `${(((jobBackupS - rawBackupS) / rawBackupS) * 100).toFixed(1)} %`,
      validationJobSeconds: Number(jobValidateS.toFixed(2)),
      validationRestoreSeconds: restoreS,
      validationRecoverySeconds: report.timings.recoveryMs / 1000,
      validationChecks: report.checks.map((c) => `${c.name} ${c.ms} ms`).join(', '),
      validationTeardownSeconds: report.timings.teardownMs / 1000,
      validationRestoreOverhead: `${(((restoreS - rawRestoreS) / rawRestoreS) * 100).toFixed(1)} %`,
      restoreMBps: Number(mb(report.bytes, restoreS).toFixed(0)),
      restoreVsCopy: Number((mb(report.bytes, restoreS) / mb(bytes, cpS)).toFixed(2)),
      pitrDeltaRestoreSeconds: Number(pitrRestoreS.toFixed(2)),
      pitrStartAndRecoverSeconds: Number(pitrStartS.toFixed(2)),
    });
    console.log(JSON.stringify(results, null, 2));
    console.log(`goals: restore/cp ≥ 0.7: ${Number(results.restoreVsCopy) >= 0.7 ? 'met' : 'NOT met'}; validation job < 10 s: ${jobValidateS < 10 ? 'met' : 'NOT met'}`);
  } finally {
    await redis.quit();
    await cluster.destroy();
    repo.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
