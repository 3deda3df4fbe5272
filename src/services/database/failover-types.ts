import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import type { ClusterLock } from '../dr-state/cluster-lock.ts';
import type { ProbeResult, ProbeRunner } from '../../health/probe-runner.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';
import type { DatabaseClients } from '../../adapters/database-clients.ts';
import type { NodeWatch } from './node-watch.ts';
import type { ReplicationMonitor } from './replication-monitor.ts';

// Types the failover service shares with its promotion, switch and the switchover: here, so that
// none of them imports the service back.

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

// What the service needs of each collaborator (its ports): the real classes in production, fakes in unit tests.
export interface FailoverDeps {
  clients: Pick<DatabaseClients, 'url'>;
  runners: ReadonlyMap<DatabaseTarget, Pick<ProbeRunner<DatabaseProbeData>, 'run' | 'latest' | 'invalidate'>>;
  monitor: ReplicationMonitor;
  watch: Pick<NodeWatch, 'identity' | 'newestTimeline' | 'abandoned'>;
  dr: Pick<DrStateService, 'current' | 'change' | 'waitForInstances' | 'storedVersion'>;
  locks: ClusterLock;
  readOnlyActive: () => boolean;
  metrics: Pick<Metrics, 'failoverTotal'>;
  logger: Logger;
  instanceId: string;
  maxLagSeconds: number;
}

/** What the promotion and the switch take of the failover service: its lock and its probes. */
export interface FailoverOps {
  withLock<T>(operation: string, fn: () => Promise<T>, ttlMs?: number): Promise<T>;
  probe(target: DatabaseTarget): Promise<ProbeResult<DatabaseProbeData> | undefined>;
}

/** What the switchover takes of the failover service: the database lock (held across the whole switchover). */
export interface FailoverLock {
  withLock<T>(operation: string, fn: () => Promise<T>, ttlMs?: number): Promise<T>;
  lockHolder(): Promise<string | null>;
}
