// `npm run drill:failback`: the whole way back to two nodes in the original roles, under steady
// uploads, on local clusters, timed by phase: kill the primary; fail over to the replica (runbook
// scripts); rebuild the old primary as a standby (rebuild-primary.sh); switch over back to it with
// zero loss (switchover.sh); rebuild the replica as its standby. Afterwards both nodes stream
// primary → replica, and every acknowledged upload is read back with its sha256.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { migrate } from '../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import { countUnreadable, startClusterService, refusalSummary, startUploadLoop } from '../support/drill.ts';
import { startPgCluster, type PgNode } from '../support/pg-cluster.ts';
import { startS3Server } from '../support/s3-server.ts';

const run = promisify(execFile);

async function streamingStandbys(node: PgNode): Promise<number> {
  const client = new pg.Client({ connectionString: node.url() });
  await client.connect();
  try {
    return (await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'")).rows[0]!.n;
  } finally {
    await client.end();
  }
}

async function main(): Promise<void> {
  const cluster = await startPgCluster();
  const s3 = await startS3Server({ bucket: 'drill-failback' });
  const { service, token } = await startClusterService('drill-failback', cluster, s3, {
    HEALTH_TIMEOUT_MS: '500',
    HEALTH_INTERVAL_MS: '1000',
  });
  const phases: [string, number][] = [];
  const phase = async (name: string, fn: () => Promise<void>) => {
    const started = performance.now();
    await fn();
    phases.push([name, Math.round(performance.now() - started)]);
  };
  const script = async (name: string, args: string[]) => {
    const { stdout } = await run('bash', [join(__dirname, 'dr', name), ...args], {
      env: { ...process.env, SAV3_API_URL: base, SAV3_ADMIN_TOKEN: token },
      maxBuffer: 4 << 20,
    });
    return stdout;
  };
  let base = '';
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    base = `http://127.0.0.1:${(await service.listen()).port}`;
    const uploads = startUploadLoop(base, 'drill/failback', 2048);
    await new Promise((r) => setTimeout(r, 1000));

    await cluster.primary.stop('immediate');
    uploads.disaster();
    await phase('fail over (read-only, promote, switch, lift)', async () => {
      await script('enable-readonly-mode.sh', ['--reason', 'drill: primary killed']);
      await script('promote-replica.sh', ['--max-lag', '3600']);
      await script('switch-database-connection.sh', ['--to', 'replica']);
      await script('disable-readonly-mode.sh', ['--reason', 'drill: replica promoted']);
    });
    let firstRebuild = '';
    await phase('rebuild the old primary as standby', async () => {
      firstRebuild = await script('rebuild-primary.sh', [
        '--pgdata',
        cluster.primary.dataDir,
        '--source',
        cluster.replica.url(),
        '--confirm',
      ]);
    });
    let switchover: { writeUnavailableMs: number; bytesLost: number; steps: { name: string; ms: number }[] } | undefined;
    await phase('switch over back to the primary', async () => {
      switchover = JSON.parse(await script('switchover.sh', ['--to', 'primary']));
    });
    let secondRebuild = '';
    await phase('rebuild the replica as standby', async () => {
      secondRebuild = await script('rebuild-primary.sh', [
        '--pgdata',
        cluster.replica.dataDir,
        '--source',
        cluster.primary.url(),
        '--confirm',
      ]);
    });
    await new Promise((r) => setTimeout(r, 500));
    await uploads.stop();

    const streaming = await streamingStandbys(cluster.primary);
    service.health.invalidate();
    const health = (await (await fetch(`${base}/health/database`)).json()) as {
      target: string;
      replication?: { state: string; direction: string };
    };
    const missing = await countUnreadable(base, uploads.acked);
    const { byCode, withoutRetryAfter } = refusalSummary(uploads.refused);
    const method = (out: string) => /method: ([^:(]+)/.exec(out)?.[1]?.trim() ?? '?';

    console.log('\nFailback drill: primary lost → two nodes in the original roles');
    for (const [name, ms] of phases) console.log(`  ${name.padEnd(46)} ${String(ms).padStart(7)} ms`);
    console.log(`  rebuilds: ${method(firstRebuild)}, then ${method(secondRebuild)}`);
    if (switchover) {
      console.log(`  switchover steps: ${switchover.steps.map((s) => `${s.name} ${s.ms} ms`).join(', ')}`);
      console.log(
        `  switchover write unavailability: ${switchover.writeUnavailableMs} ms (goal: under 1000 ms); bytes lost: ${switchover.bytesLost}`,
      );
    }
    console.log(
      `  afterwards: active ${health.target}, replication ${health.replication?.direction} ${health.replication?.state}; standbys streaming from the primary: ${streaming}`,
    );
    console.log(
      `  uploads acknowledged: ${uploads.acked.size}; refused: ${uploads.refused.length} ${JSON.stringify(byCode)}; without 503 + Retry-After: ${withoutRetryAfter}`,
    );
    console.log(`  acknowledged uploads missing or wrong afterwards: ${missing}`);
    const ok =
      missing === 0 &&
      streaming === 1 &&
      health.target === 'primary' &&
      health.replication?.direction === 'primary->replica' &&
      health.replication.state !== 'disconnected' &&
      switchover?.bytesLost === 0;
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
