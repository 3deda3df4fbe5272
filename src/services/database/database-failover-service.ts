import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import { withActiveDatabase } from '../dr-state/database-state.ts';
import type { ProbeResult } from '../../health/probe-runner.ts';
import { DatabasePromotion } from './database-promotion.ts';
import { DatabaseSwitch } from './database-switch.ts';
import type { FailoverDeps, FailoverLock, FailoverOps } from './failover-types.ts';

export const DATABASE_LOCK = 'database';
const LOCK_TTL_MS = 120_000;

/**
 * Replica promotion (database-promotion.ts) and database target switches (database-switch.ts),
 * under one cluster-wide lock; the DR state's reset.
 */
export class DatabaseFailoverService implements FailoverLock {
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
