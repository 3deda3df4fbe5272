import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import { withActiveDatabase } from '../dr-state/database-state.ts';
import type { ClusterLock } from '../dr-state/cluster-lock.ts';
import type { ProbeResult, ProbeRunner } from '../../health/probe-runner.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';
import type { DatabaseClients } from '../../adapters/database-clients.ts';
import { DatabasePromotion } from './database-promotion.ts';
import { DatabaseSwitch } from './database-switch.ts';
import type { NodeWatch } from './node-watch.ts';
import type { ReplicationMonitor } from './replication-monitor.ts';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export const DATABASE_LOCK = 'database';
const LOCK_TTL_MS = 120_000;

// What the service needs of each collaborator (its ports): the real classes in production, fakes in unit tests.
export interface FailoverDeps {
  clients: Pick<DatabaseClients, 'url'>;
  runners: ReadonlyMap<DatabaseTarget, Pick<ProbeRunner<DatabaseProbeData>, 'run' | 'latest' | 'invalidate'>>;
  monitor: ReplicationMonitor;
  watch: Pick<NodeWatch, 'identity' | 'newestTimeline' | 'abandoned'>;
  dr: Pick<DrStateService, 'current' | 'change' | 'waitForInstances'>;
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

/**
 * Replica promotion (database-promotion.ts) and database target switches (database-switch.ts),
 * under one cluster-wide lock; the DR state's reset.
 */
export class DatabaseFailoverService {
  private readonly promotion: DatabasePromotion;
  private readonly switcher: DatabaseSwitch;

  constructor(private readonly deps: FailoverDeps) {
    const ops: FailoverOps = { withLock: (op, fn, ttl) => this.withLock(op, fn, ttl), probe: (t) => this.probe(t) };
    this.promotion = new DatabasePromotion(deps, ops);
    this.switcher = new DatabaseSwitch(deps, ops);
  }

  /** See DatabasePromotion.promote. */
  promote(input: { dryRun: boolean; maxLagSeconds?: number }) {
    return this.promotion.promote(input);
  }

  /** See DatabaseSwitch.switchDatabase. */
  switchDatabase(input: { to: DatabaseTarget; dryRun: boolean }, by: string) {
    return this.switcher.switchDatabase(input, by);
  }

  /** Runs `fn` holding the cluster-wide database lock; 409 naming the holder if someone has it. */
  async withLock<T>(operation: string, fn: () => Promise<T>, ttlMs = LOCK_TTL_MS): Promise<T> {
    return this.deps.locks.withLock(DATABASE_LOCK, operation, fn, { ttlMs, busyMessage: 'another database DR operation is running' });
  }

  /** Who holds the database lock (null: nobody, or the store does not answer). */
  lockHolder(): Promise<string | null> {
    return this.deps.locks.holder(DATABASE_LOCK);
  }

  private async probe(target: DatabaseTarget): Promise<ProbeResult<DatabaseProbeData> | undefined> {
    const runner = this.deps.runners.get(target);
    return runner ? runner.run() : undefined;
  }

  /** The initial state (read-only off, primary targets), with the identities of the nodes configured now. */
  async resetState(by: string, reason: string) {
    await Promise.all([...this.deps.runners.values()].map((r) => r.run()));
    const replica = this.deps.watch.identity('replica');
    const primary = this.deps.watch.identity('primary');
    const inRecovery = this.deps.runners.get('primary')?.latest()?.data?.inRecovery ?? null;
    // Only the active node (primary) sets the newest timeline at a reset; the replica's identity is kept as seen.
    return this.deps.dr.change((_s, now) =>
      withActiveDatabase(
        {
          readOnly: { enabled: false, reason: `reset: ${reason}`, since: now, by, expiresAt: null },
          database: { active: 'primary', since: now, by, nodes: replica ? { replica } : {}, promotedAt: null },
          media: { active: 'primary', since: now, by },
        },
        'primary',
        primary,
        { inRecovery, by, now },
      ),
    );
  }
}
