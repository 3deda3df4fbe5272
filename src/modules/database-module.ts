import type { Router } from 'express';
import type { Config } from '../config/config.ts';
import type { DatabaseProbeData, DatabaseTarget } from '../domain.ts';
import { ProbeRunner, type ProbeRunnerOptions } from '../health/probe-runner.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import type { ClusterLock } from '../services/dr-state/cluster-lock.ts';
import type { ReadOnlyService } from '../services/read-only/read-only-service.ts';
import type { WriteRefusal } from '../services/write-gate/write-gate.ts';
import type { DatabaseClients } from '../adapters/database-clients.ts';
import { AutoReadOnly } from '../services/database/auto-read-only.ts';
import { DatabaseFailoverService } from '../services/database/database-failover-service.ts';
import { databaseRoutes } from '../routes/database-routes.ts';
import { fenceNode } from '../services/database/node-fence.ts';
import { NodeWatch } from '../services/database/node-watch.ts';
import { DatabaseVerifier } from '../services/database/database-verifier.ts';
import { probeDatabase } from '../health/pg-probe.ts';
import { ReplicationMonitor, type ReplicationReport } from '../services/database/replication-monitor.ts';
import { SqlNodes } from '../services/database/sql-nodes.ts';
import { switchoverRoutes } from '../routes/switchover-routes.ts';
import { switchoverStateChanges } from '../services/database/switchover-state.ts';
import { SwitchoverService } from '../services/database/switchover-service.ts';
import { ReadOnlyWriteBarrier } from '../services/database/write-barrier.ts';

export interface DatabaseModule {
  runners: Map<DatabaseTarget, ProbeRunner<DatabaseProbeData>>;
  monitor: ReplicationMonitor;
  failover: DatabaseFailoverService;
  watch: NodeWatch;
  /** The target reads go to: the active one, or another that answers while the active one does not. */
  readTarget(): DatabaseTarget;
  switchover: SwitchoverService;
  replication(): ReplicationReport | undefined;
  /** The pair as /admin/dr/state shows it: which configured node holds which role, lag. */
  pair(maxAgeMs: number): Promise<Record<string, unknown> | undefined>;
  /** Why writes are refused on this instance's database view (standby, fenced, older timeline), or null. */
  writeRefusal(): WriteRefusal | null;
  /** Admin routers (failover, verify, switchover). */
  adminRouters: Router[];
}

/** Database probes, replication tracking, failover and verification, following the DR state. */
export function createDatabaseModule(deps: {
  config: Config;
  clients: DatabaseClients;
  dr: DrStateService;
  locks: ClusterLock;
  audit: AuditLog;
  readOnly: ReadOnlyService;
  metrics: Metrics;
  logger: Logger;
  migrationsDir: string;
}): DatabaseModule {
  const { config, clients, dr, audit, readOnly, metrics, logger } = deps;
  const timeoutMs = config.healthTimeoutMs;
  const monitor = new ReplicationMonitor(config.replicationMaxLagSeconds, () => dr.current().database.active);
  const runners = new Map<DatabaseTarget, ProbeRunner<DatabaseProbeData>>();
  // Created below; the probes call it once running.
  let switchover: SwitchoverService | undefined;
  const replication = (): ReplicationReport | undefined =>
    runners.has('replica') ? monitor.report(runners.get('primary')?.latest(), runners.get('replica')?.latest()) : undefined;

  const auto =
    config.autoReadOnly && clients.has('replica')
      ? new AutoReadOnly({
          dr,
          audit,
          logger,
          failuresToEngage: config.autoReadOnlyFailures,
          recoveriesToRelease: config.autoReadOnlyRecoveries,
          replica: () => runners.get('replica')?.latest(),
          primaryCurrent: () => {
            const data = runners.get('primary')?.latest()?.data;
            if (!data || data.fenced || data.inRecovery || data.commitsHang) return false;
            const newest = watch.newestTimeline(data.systemId);
            return newest === null || data.timeline === null || data.timeline >= newest;
          },
        })
      : undefined;

  const watch = new NodeWatch({
    latest: (target) => runners.get(target)?.latest(),
    state: () => dr.current(),
    fence: async (target) => {
      const result = await fenceNode(clients.url(target)!, Math.max(timeoutMs * 5, 2000));
      await clients.release(target).catch(() => undefined);
      void runners.get(target)?.run();
      return result;
    },
    onWritableNodes: (count) => metrics.databaseWritableNodes.set(count),
    audit,
    logger,
  });
  for (const target of ['primary', 'replica'] as const) {
    const url = clients.url(target);
    if (url === undefined) continue;
    const options: ProbeRunnerOptions<DatabaseProbeData> = {
      dependency: 'database',
      target: () => target,
      timeoutMs,
      metrics,
      logger,
      onResult: (result) => {
        monitor.observe(target, result);
        if (
          result.ok &&
          result.data?.fenced &&
          !result.data.inRecovery &&
          target === dr.current().database.active &&
          leftFencedBySwitchover(target)
        ) {
          void switchover?.recoverInterrupted(target);
        }
        if (target === 'primary') auto?.observePrimary(result);
        watch.observe();
        const lag = replication()?.lagSeconds;
        if (runners.has('replica')) metrics.replicationLag.set(lag ?? -1);
      },
    };
    runners.set(target, new ProbeRunner((signal) => probeDatabase({ connectionString: url, timeoutMs, signal }), options));
  }

  const setTargetGauge = (active: DatabaseTarget) => {
    for (const t of ['primary', 'replica'] as const) metrics.databaseActiveTarget.set({ target: t }, t === active ? 1 : 0);
  };
  setTargetGauge(clients.active);
  // Every instance follows the shared state: new requests go to the new target at once.
  dr.onApply(async (state, previous) => {
    // The write gate judges the active target by its latest probe: after a switch (or when writes
    // reopen, e.g. after a switchover unfenced or promoted a node) that must be fresh before this
    // instance reports the change applied.
    if (state.database.active !== previous.database.active || (previous.readOnly.enabled && !state.readOnly.enabled)) {
      await runners.get(state.database.active)?.run();
    }
    // Any change may come with nodes fenced, unfenced or promoted by the instance that made it:
    // every node is probed again now, so this instance's health does not report them as they were
    // until the next interval.
    if (state.version !== previous.version) for (const runner of runners.values()) void runner.run().catch(() => undefined);
    // A promotion recorded: the switch to the promoted node comes next. Its pool is opened now, in
    // the background, so the first requests after the switch do not wait for a client and a connection.
    if (state.database.promotedAt && state.database.promotedAt !== previous.database.promotedAt) {
      for (const target of ['primary', 'replica'] as const) if (target !== state.database.active) void clients.warm(target);
    }
    if (state.database.active === previous.database.active && clients.active === state.database.active) return;
    setTargetGauge(state.database.active);
    // New requests go to the new target at once (setActive does that first); the old pool drains
    // in the background, so reporting the switch applied does not wait for the drain.
    void clients.setActive(state.database.active, config.databaseDrainMs).then((drained) => {
      logger.warn({ from: previous.database.active, to: state.database.active, drained }, 'database target switched');
    });
  });

  const failover = new DatabaseFailoverService({
    clients,
    runners,
    monitor,
    watch,
    dr,
    locks: deps.locks,
    readOnlyActive: () => readOnly.isActive(),
    metrics,
    logger,
    instanceId: config.instanceId,
    maxLagSeconds: config.replicationMaxLagSeconds,
  });
  /** Both nodes probed for this call: a probe already running when it was asked is not taken. */
  const freshReplication = async () => {
    if (!runners.has('replica')) return undefined;
    const asked = Date.now();
    const fresh = async (target: DatabaseTarget) => {
      const runner = runners.get(target)!;
      const result = await runner.run();
      return result.checkedAt.getTime() >= asked ? result : runner.run();
    };
    const [p, r] = await Promise.all([fresh('primary'), fresh('replica')]);
    return { report: monitor.report(p, r), probes: { primary: p, replica: r } };
  };
  const verifier = new DatabaseVerifier({
    clients,
    runners,
    replication: freshReplication,
    migrationsDir: deps.migrationsDir,
    instanceId: config.instanceId,
  });
  /**
   * The active target is fenced, is on the newest timeline, and no other node takes writes: what a
   * switchover that died before its promotion leaves behind (a promoted standby means forward only).
   */
  function leftFencedBySwitchover(target: DatabaseTarget): boolean {
    const data = runners.get(target)?.latest()?.data;
    const other = runners.get(target === 'primary' ? 'replica' : 'primary')?.latest();
    const otherWrites = other?.ok === true && other.data?.inRecovery === false && !other.data.fenced;
    const newest = watch.newestTimeline(data?.systemId ?? null);
    const current = newest === null || data?.timeline == null || data.timeline >= newest;
    return !otherWrites && current;
  }
  /**
   * Reads go to the active target, unless it does not answer (then to the other node, if it does)
   * or another reachable node of the same cluster is on a newer timeline (a promoted node, or its
   * standby): the active one then serves stale data, e.g. after the DR state was lost or reset
   * while the replica had been promoted.
   */
  const readTarget = (): DatabaseTarget => {
    const active = clients.active;
    const other: DatabaseTarget = active === 'primary' ? 'replica' : 'primary';
    const a = runners.get(active)?.latest();
    const o = runners.get(other)?.latest();
    // Never reads from a node on an older timeline than the newest known (a former primary): it
    // lacks what was acknowledged since; the active target's failure is answered instead.
    const behind = (d: DatabaseProbeData | undefined) => {
      if (!d || d.timeline === null) return true;
      const newest = Math.max(watch.newestTimeline(d.systemId) ?? 0, dr.current().database.newestTimeline ?? 0);
      return d.timeline < newest || watch.abandoned(d.systemId, d.timeline);
    };
    if (a?.ok === false) return o?.ok && !behind(o.data) ? other : active;
    const ad = a?.data;
    const od = o?.ok ? o.data : undefined;
    if (
      ad &&
      od &&
      ad.systemId !== null &&
      ad.systemId === od.systemId &&
      ad.timeline !== null &&
      od.timeline !== null &&
      od.timeline > ad.timeline &&
      !watch.abandoned(od.systemId, od.timeline)
    )
      return other;
    return active;
  };
  const pair = async (maxAgeMs: number) => {
    if (!runners.has('replica')) return undefined;
    const [p, r] = await Promise.all([runners.get('primary')!.get(maxAgeMs), runners.get('replica')!.get(maxAgeMs)]);
    const report = monitor.report(p, r);
    return {
      roles: report.roles,
      writer: report.writer,
      standby: report.standby,
      direction: report.direction,
      replication: {
        state: report.state,
        status: report.status,
        lagSeconds: report.lagSeconds,
        lagBytes: report.lagBytes,
        ...(report.diverged ? { diverged: report.diverged } : {}),
      },
    };
  };
  switchover = new SwitchoverService({
    clients,
    nodes: new SqlNodes(clients),
    failover,
    dr,
    readOnly,
    barrier: new ReadOnlyWriteBarrier(readOnly, dr),
    metrics,
    logger,
    ...switchoverStateChanges({ dr, watch, runners }),
    onRecovered: async (what) => {
      await audit.record({
        actor: 'system:switchover-recovery',
        role: null,
        action: 'database.switchover.recover',
        result: 'success',
        before: null,
        after: null,
        detail: { what },
        requestId: null,
      });
    },
  });
  const afterChange = () => {
    for (const runner of runners.values()) runner.invalidate();
  };
  return {
    runners,
    monitor,
    failover,
    watch,
    readTarget,
    switchover: switchover!,
    replication,
    pair,
    writeRefusal: () => watch.writeRefusal(),
    adminRouters: [databaseRoutes({ failover, verifier, dr, audit }), switchoverRoutes({ switchover, audit, afterChange })],
  };
}
