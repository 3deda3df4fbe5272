import { eventually } from '../../support/common.ts';
import type { DatabaseTarget } from '../../src/domain.ts';
import { INITIAL_STATE } from '../../src/services/dr-state/dr-state.ts';
import { probeDatabase } from '../../src/health/pg-probe.ts';
import { SqlNodes } from '../../src/services/database/sql-nodes.ts';
import { checkSwitchover } from '../../src/services/database/switchover-checks.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { drScript, query } from '../support/dr-scripts.ts';

/**
 * pg_control_checkpoint() names the old timeline after a promotion until the next checkpoint. With
 * the promoted node's checkpointer held (SIGSTOP), that window stays open: every timeline the
 * switchover and the probes compare or report must still be the real, new one.
 */
describe('timelines right after a promotion, before its checkpoint', () => {
  let cluster: PgCluster;
  let held: number | undefined;

  beforeAll(async () => {
    cluster = await startPgCluster();
  }, 60_000);
  afterAll(async () => {
    if (held !== undefined) process.kill(held, 'SIGCONT');
    await cluster?.destroy();
  });

  it('the switchover facts, the write check, the probe and the old_primary_is_primary detail name the new timeline', async () => {
    const urls: Record<DatabaseTarget, string> = { primary: cluster.primary.url(), replica: cluster.replica.url() };
    const clients = { url: (t: DatabaseTarget) => urls[t], has: () => true };
    const nodes = new SqlNodes(clients as never);
    const before = await nodes.facts('replica');
    expect(before).toMatchObject({ ok: true, inRecovery: true, timeline: 1 });

    const checkpointer = await eventually(
      () => query<{ pid: number }>(cluster.replica, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"),
      (rows) => rows.length === 1,
      10_000,
      200,
    );
    expect(checkpointer).toHaveLength(1);
    held = checkpointer[0]!.pid;
    process.kill(held, 'SIGSTOP');
    await cluster.primary.stop('fast');
    expect(await nodes.promote('replica')).toEqual({ timeline: 2 });
    // The lag this is about: the control file still has the checkpoint of timeline 1.
    expect((await query<{ tli: number }>(cluster.replica, 'SELECT timeline_id AS tli FROM pg_control_checkpoint()'))[0]!.tli).toBe(1);

    expect(await nodes.facts('replica')).toMatchObject({ ok: true, inRecovery: false, timeline: 2 });
    expect((await nodes.verifyWrites('replica', 3000)).timeline).toBe(2);
    const controller = new AbortController();
    expect(await probeDatabase({ connectionString: urls.replica, timeoutMs: 3000, signal: controller.signal })).toMatchObject({
      inRecovery: false,
      timeline: 2,
    });
    // A switchover back to the (stopped) primary: refused, and the detail names the real timeline.
    const state = { ...INITIAL_STATE, database: { active: 'replica' as const, since: null, by: null } };
    const check = await checkSwitchover({ clients, nodes, dr: { current: () => state } as never }, 'primary', 1024);
    expect(check.checks.find((c) => c.name === 'old_primary_is_primary')).toMatchObject({
      ok: true,
      detail: 'replica is the primary (timeline 2)',
    });
    // Still before any checkpoint: the comparison above was made inside the window.
    expect((await query<{ tli: number }>(cluster.replica, 'SELECT timeline_id AS tli FROM pg_control_checkpoint()'))[0]!.tli).toBe(1);

    // Killed inside the window (its control file still says timeline 1): rebuilding it from the old
    // primary, on timeline 1, would throw away timeline 2. The script reads the newest timeline
    // from the history file the promotion wrote, and refuses.
    const pids = (await query<{ pid: number }>(cluster.replica, 'SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()')).map(
      (r) => r.pid,
    );
    const postmaster = Number(readFileSync(join(cluster.replica.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    for (const pid of [postmaster, ...pids]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    held = undefined;
    // A killed postmaster nobody reaps stays a zombie that pg_ctl status counts as running: the
    // pid file goes, as after a crash and reboot.
    await new Promise((r) => setTimeout(r, 500));
    rmSync(join(cluster.replica.dataDir, 'postmaster.pid'), { force: true });
    await cluster.primary.start();
    const rebuilt = await drScript('rebuild-primary.sh', [
      '--pgdata',
      cluster.replica.dataDir,
      '--source',
      cluster.primary.url(),
      '--confirm',
    ]);
    expect(rebuilt.code).toBe(1);
    expect(rebuilt.stderr).toContain('timeline 2, newer than the source');
  }, 60_000);
});
