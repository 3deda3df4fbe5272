import type { DatabaseTarget } from '../../domain.ts';
import { SWITCHOVER_READ_ONLY_REASON, type SwitchoverDeps } from './switchover-types.ts';

/**
 * A switchover whose instance died is rolled back by any instance that finds what it left. (A
 * step failing in a running switchover: see switchover-rollback.ts.)
 */
export class SwitchoverRecovery {
  private recovering = false;

  constructor(private readonly deps: SwitchoverDeps) {}

  /**
   * A switchover whose instance died before the promotion leaves the active target fenced and
   * its read-only mode on. Any instance that sees that while nobody holds the database lock puts
   * the target back in charge: the standby took no writes (nothing pointed at it), so nothing is
   * lost. (After a promotion the module never calls this: forward only.) Returns what it did.
   */
  async recoverInterrupted(active: DatabaseTarget): Promise<string | null> {
    if (this.recovering || (await this.deps.failover.lockHolder()) !== null) return null;
    this.recovering = true;
    try {
      return await this.deps.failover.withLock(
        'switchover-recovery',
        async () => {
          // Only a fence a switchover left: its read-only mode is still on (the reason may have been
          // rewritten when its TTL was kept on over the fenced target). A fence set by hand stays.
          const state = this.deps.dr.current().readOnly;
          if (!state.enabled || !(state.reason ?? '').includes(SWITCHOVER_READ_ONLY_REASON)) return null;
          const facts = await this.deps.nodes.facts(active);
          if (!facts.ok || facts.inRecovery || !facts.fenced || this.deps.dr.current().database.active !== active) return null;
          await this.deps.nodes.unfence(active);
          await this.deps.barrier.release(`interrupted switchover rolled back: ${active} takes writes again`, 'system:switchover-recovery');
          const what = `${active} was left fenced by an interrupted switchover: unfenced, read-only mode lifted`;
          this.deps.logger.warn({ active }, what);
          await this.deps.onRecovered?.(what);
          return what;
        },
        30_000,
      );
    } catch {
      return null;
    } finally {
      this.recovering = false;
    }
  }
}
