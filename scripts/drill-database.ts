// `npm run drill:database`: the runbook's database scenario on local clusters, timed. Media uploads
// run in a loop; the primary is killed (immediate stop); the runbook scripts enable read-only mode,
// promote the replica, switch every instance to it and lift read-only mode. Prints the RTO (kill to
// the first accepted write), the writes refused meanwhile, and proves every acknowledged upload is
// there afterwards with its sha256, and that no refused upload left content behind.
import { migrate } from '../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import pg from 'pg';
import { countUnreadable, startClusterService, refusalSummary, runbookScript, startUploadLoop } from '../support/drill.ts';
import { stateSafetyDrill } from '../support/state-safety-drill.ts';
import { plannedSwitchover } from '../support/switchover.ts';
import { startPgCluster } from '../support/pg-cluster.ts';
import { startS3Server } from '../support/s3-server.ts';
import { sha256Hex } from '../support/common.ts';

async function main(): Promise<void> {
  const cluster = await startPgCluster();
  const s3 = await startS3Server({ bucket: 'drill-media' });
  const { service, token } = await startClusterService('drill-1', cluster, s3, { HEALTH_TIMEOUT_MS: '500' });
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    const base = `http://127.0.0.1:${(await service.listen()).port}`;
    const script = (name: string, args: string[]) => runbookScript(base, token, name, args);
    const uploads = startUploadLoop(base, 'drill/upload', 2048);

    // Some uploads are acknowledged by the primary before it dies (at least 1 s, and 5 uploads).
    const warmUntil = performance.now() + 10_000;
    await new Promise((r) => setTimeout(r, 1000));
    while (uploads.acked.size < 5 && performance.now() < warmUntil) await new Promise((r) => setTimeout(r, 20));
    const beforeKill = uploads.acked.size;
    await cluster.primary.stop('immediate');
    const killedAt = uploads.disaster();
    const steps: [string, number][] = [];
    steps.push(['enable-readonly-mode.sh', await script('enable-readonly-mode.sh', ['--reason', 'drill: primary killed'])]);
    // With the primary dead and read-only on, the instance stays in the load balancer, serving reads.
    service.health.invalidate();
    const readyWhileDown = (await fetch(`${base}/health/ready`)).status;
    const firstKey = [...uploads.acked.keys()][0];
    const readWhileDown = firstKey ? (await fetch(`${base}/media/${firstKey}`)).status : 0;
    steps.push(['promote-replica.sh', await script('promote-replica.sh', ['--max-lag', '3600'])]);
    steps.push(['switch-database-connection.sh --to replica', await script('switch-database-connection.sh', ['--to', 'replica'])]);
    steps.push(['disable-readonly-mode.sh', await script('disable-readonly-mode.sh', ['--reason', 'drill: replica promoted'])]);
    const rtoMs = Math.round((await uploads.firstAcceptedAfterDisaster(10_000)) - killedAt);
    await new Promise((r) => setTimeout(r, 500));
    await uploads.stop();

    // The old primary comes back: it must be fenced (read-only, sessions ended), never written to.
    const returnedAt = performance.now();
    await cluster.primary.start();
    let fencedMs = NaN;
    while (performance.now() - returnedAt < 15_000) {
      const metrics = await (await fetch(`${base}/metrics`)).text();
      const fenced = await oldPrimaryFenced(cluster.primary.url());
      if (fenced && /^sav3_database_writable_nodes 1$/m.test(metrics)) {
        fencedMs = Math.round(performance.now() - returnedAt);
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const writeAfterReturn = (await fetch(`${base}/media/drill/after-return`, { method: 'PUT', body: 'after' })).status;
    if (writeAfterReturn === 201) uploads.acked.set('drill/after-return', sha256Hex(Buffer.from('after')));

    const missing = await countUnreadable(base, uploads.acked);
    let orphans = 0;
    for await (const object of service.objectStores.get('primary')!.list('drill/')) if (!uploads.acked.has(object.key)) orphans += 1;
    const { byCode, withoutRetryAfter } = refusalSummary(uploads.refused);

    console.log('\nDatabase failover drill');
    for (const [name, ms] of steps) console.log(`  ${name.padEnd(44)} ${String(ms).padStart(6)} ms`);
    console.log(`  RTO (primary killed → first accepted write)  ${String(rtoMs).padStart(6)} ms   (goal: under 5000 ms)`);
    console.log(`  uploads acknowledged: ${uploads.acked.size} (${beforeKill} before the kill)`);
    console.log(
      `  uploads refused meanwhile: ${uploads.refused.length} ${JSON.stringify(byCode)}; without 503 + Retry-After: ${withoutRetryAfter}`,
    );
    console.log(`  acknowledged uploads missing or wrong afterwards: ${missing}`);
    console.log(`  refused uploads that left content behind: ${orphans}`);
    console.log(
      `  while the primary was down with read-only on: /health/ready ${readyWhileDown}, a read ${readWhileDown}   (goal: 200, 200)`,
    );
    console.log(`  old primary back → fenced and 1 writable node: ${fencedMs} ms; a write afterwards: ${writeAfterReturn}`);
    let ok =
      missing === 0 &&
      orphans === 0 &&
      withoutRetryAfter === 0 &&
      rtoMs < 5000 &&
      readyWhileDown === 200 &&
      readWhileDown === 200 &&
      !Number.isNaN(fencedMs) &&
      writeAfterReturn === 201;

    // Planned switchover with uploads in flight: the write barrier, catch-up, fencing, timings.
    const planned = await plannedSwitchover({ concurrency: 8, uploadBytes: 2048 });
    console.log('\nPlanned switchover with 8 uploads in flight (two instances, synchronous replica)');
    console.log(
      `  enable read-only ${planned.enableMs} ms (writes in flight ${planned.writesAtEnable.inFlight}: ${planned.writesAtEnable.waitedFor} waited for, ${planned.writesAtEnable.failing} failed at their commit)`,
    );
    console.log(
      `  promote ${planned.promoteMs} ms, switch ${planned.switchMs} ms, disable ${planned.disableMs} ms; write unavailability ${planned.unavailableMs} ms`,
    );
    console.log(`  uploads refused meanwhile: ${JSON.stringify(planned.refused)}`);
    console.log(
      `  acknowledged ${planned.acked}; lost ${planned.missingOnNewPrimary}; on the old primary after the enable ${planned.ackedOnOldPrimaryAfterEnable}; old primary fenced ${planned.oldPrimaryFenced}`,
    );
    ok = ok && planned.missingOnNewPrimary === 0 && planned.ackedOnOldPrimaryAfterEnable === 0 && planned.oldPrimaryFenced;

    // The DR state itself: TTL over a standby, restart with Redis down, a mismatched state.
    console.log('\nDR state safety (own cluster, instance and Redis)');
    for (const check of await stateSafetyDrill()) {
      console.log(`  ${check.ok ? 'pass' : 'FAIL'}  ${check.name.padEnd(44)} ${check.detail}`);
      ok = ok && check.ok;
    }
    console.log(ok ? '\ndrill passed' : '\ndrill FAILED');
    process.exitCode = ok ? 0 : 1;
  } finally {
    await service.stop();
    await s3.destroy();
    await cluster.destroy();
  }
}

async function oldPrimaryFenced(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.query<{ v: string }>("SELECT current_setting('default_transaction_read_only') AS v")).rows[0]?.v === 'on';
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
