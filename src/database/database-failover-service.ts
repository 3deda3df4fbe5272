import type { DatabaseTarget } from '../config/config.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import type { DrStateStore } from '../dr-state/dr-state-store.ts';
import type { NodeIdentity } from '../dr-state/dr-state.ts';
import type { ProbeResult, ProbeRunner } from '../health/probe-runner.ts';
import { ConflictError } from '../http/app-error.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { DatabaseClients } from './database-clients.ts';
import { DatabasePromotion } from './database-promotion.ts';
import { DatabaseSwitch } from './database-switch.ts';
import type { NodeWatch } from './node-watch.ts';
import type { DatabaseProbeData } from './pg-probe.ts';
import type { ReplicationMonitor } from './replication-monitor.ts';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export const DATABASE_LOCK = 'database';
const LOCK_TTL_MS = 120_000;

export interface FailoverDeps {
  clients: DatabaseClients;
  runners: ReadonlyMap<DatabaseTarget, ProbeRunner<DatabaseProbeData>>;
  monitor: ReplicationMonitor;
  watch: NodeWatch;
  dr: DrStateService;
  store: DrStateStore;
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

  /** See DatabaseSwitch.switchTo. */
  switchTo(input: { to: DatabaseTarget; dryRun: boolean }, by: string) {
    return this.switcher.switchTo(input, by);
  }

  /** Runs `fn` holding the cluster-wide database lock; 409 naming the holder if someone has it. */
  async withLock<T>(operation: string, fn: () => Promise<T>, ttlMs = LOCK_TTL_MS): Promise<T> {
    const owner = `${this.deps.instanceId}:${operation}:${Date.now()}`;
    if (!(await this.deps.store.acquireLock(DATABASE_LOCK, owner, ttlMs))) {
      const holder = await this.deps.store.lockHolder(DATABASE_LOCK).catch(() => null);
      throw new ConflictError('another database DR operation is running', { lock: DATABASE_LOCK, holder });
    }
    try {
      return await fn();
    } finally {
      await this.deps.store.releaseLock(DATABASE_LOCK, owner).catch(() => undefined);
    }
  }

  /** Who holds the database lock (null: nobody, or the store does not answer). */
  lockHolder(): Promise<string | null> {
    return this.deps.store.lockHolder(DATABASE_LOCK).catch(() => null);
  }

  private async probe(target: DatabaseTarget): Promise<ProbeResult<DatabaseProbeData> | undefined> {
    const runner = this.deps.runners.get(target);
    return runner ? runner.run() : undefined;
  }

  /** The initial state (read-only off, primary targets), with the identities of the nodes configured now. */
  async resetState(by: string, reason: string) {
    await Promise.all([...this.deps.runners.values()].map((r) => r.run()));
    const nodes: Partial<Record<DatabaseTarget, NodeIdentity>> = {};
    for (const target of ['primary', 'replica'] as const) {
      const identity = this.deps.watch.identity(target);
      if (identity) nodes[target] = identity;
    }
    const primary = this.deps.runners.get('primary')?.latest()?.data;
    return this.deps.dr.change((_s, now) => ({
      readOnly: { enabled: false, reason: `reset: ${reason}`, since: now, by, expiresAt: null },
      database: { active: 'primary', since: now, by, nodes, ...(primary?.timeline && !primary.inRecovery ? { newestTimeline: primary.timeline } : {}), promotedAt: null },
      media: { active: 'primary', since: now, by },
    }));
  }
}
