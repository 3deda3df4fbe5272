import type { Router } from 'express';
import type { Config, DatabaseTarget } from '../config/config.ts';
import type { DrModule } from '../dr-module.ts';
import { ProbeRunner, type ProbeRunnerOptions } from '../health/probe-runner.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { DatabaseClients } from './database-clients.ts';
import { AutoReadOnly } from './auto-read-only.ts';
import { DatabaseFailoverService } from './database-failover-service.ts';
import { databaseRoutes } from './database-routes.ts';
import { fenceNode } from './node-fence.ts';
import { NodeWatch } from './node-watch.ts';
import { DatabaseVerifier } from './database-verifier.ts';
import { probeDatabase, type DatabaseProbeData } from './pg-probe.ts';
import { ReplicationMonitor, type ReplicationReport } from './replication-monitor.ts';

export interface DatabaseModule {
  runners: Map<DatabaseTarget, ProbeRunner<DatabaseProbeData>>;
  monitor: ReplicationMonitor;
  failover: DatabaseFailoverService;
  watch: NodeWatch;
  /** The target reads go to: the active one, or another that answers while the active one does not. */
  readTarget(): DatabaseTarget;
  replication(): ReplicationReport | undefined;
  routers: Router[];
}

/** Database probes, replication tracking, failover and verification, following the DR state. */
export function createDatabaseModule(deps: {
  config: Config;
  clients: DatabaseClients;
  dr: DrModule;
  metrics: Metrics;
  logger: Logger;
  migrationsDir: string;
}): DatabaseModule {
  const { config, clients, dr, metrics, logger } = deps;
  const timeoutMs = config.healthTimeoutMs;
  const monitor = new ReplicationMonitor(config.replicationMaxLagSeconds);
  const runners = new Map<DatabaseTarget, ProbeRunner<DatabaseProbeData>>();
  const replication = (): ReplicationReport | undefined => (runners.has('replica') ? monitor.report(runners.get('primary')?.latest(), runners.get('replica')?.latest()) : undefined);

  const auto =
    config.autoReadOnly && clients.has('replica')
      ? new AutoReadOnly({
          dr: dr.state,
          audit: dr.audit,
          logger,
          failuresToEngage: config.autoReadOnlyFailures,
          recoveriesToRelease: config.autoReadOnlyRecoveries,
          replica: () => runners.get('replica')?.latest(),
          primaryCurrent: () => {
            const data = runners.get('primary')?.latest()?.data;
            if (!data || data.fenced || data.inRecovery) return false;
            const newest = watch.newestTimeline(data.systemId);
            return newest === null || data.timeline === null || data.timeline >= newest;
          },
        })
      : undefined;

  const watch = new NodeWatch({
    latest: (target) => runners.get(target)?.latest(),
    state: () => dr.state.current(),
    fence: async (target) => {
      const result = await fenceNode(clients.url(target)!, Math.max(timeoutMs * 5, 2000));
      await clients.release(target).catch(() => undefined);
      void runners.get(target)?.run();
      return result;
    },
    onWritableNodes: (count) => metrics.databaseWritableNodes.set(count),
    audit: dr.audit,
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
        if (target === 'primary') {
          monitor.observePrimary(result);
          auto?.observePrimary(result);
        }
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
  dr.state.onApply(async (state, previous) => {
    if (state.database.active === previous.database.active && clients.active === state.database.active) return;
    setTargetGauge(state.database.active);
    const drained = await clients.switchTo(state.database.active, config.databaseDrainMs);
    logger.warn({ from: previous.database.active, to: state.database.active, drained }, 'database target switched');
  });

  const failover = new DatabaseFailoverService({
    clients,
    runners,
    monitor,
    watch,
    dr: dr.state,
    store: dr.store,
    readOnlyActive: () => dr.readOnly.isActive(),
    metrics,
    logger,
    instanceId: config.instanceId,
    maxLagSeconds: config.replicationMaxLagSeconds,
  });
  const verifier = new DatabaseVerifier({ clients, runners, replication, migrationsDir: deps.migrationsDir, instanceId: config.instanceId });
  const readTarget = (): DatabaseTarget => {
    const active = clients.active;
    if (runners.get(active)?.latest()?.ok !== false) return active;
    const other: DatabaseTarget = active === 'primary' ? 'replica' : 'primary';
    return runners.get(other)?.latest()?.ok ? other : active;
  };
  return { runners, monitor, failover, watch, readTarget, replication, routers: [databaseRoutes({ failover, verifier, dr: dr.state, audit: dr.audit })] };
}
