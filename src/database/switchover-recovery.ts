import type { DatabaseTarget } from '../domain.ts';
import type { SwitchoverDeps } from './switchover-service.ts';

/** The switchover's own TTL'd read-only mode carries this reason: how its leftovers are recognised. */
export const SWITCHOVER_READ_ONLY_REASON = 'switchover:';

type Outcome = { name: string; ok: boolean; detail: string };

/**
 * What happens when a switchover does not finish: a step failing before the promotion rolls back,
 * one failing after it completes forward, and a switchover whose instance died is rolled back by
 * any instance that finds what it left.
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
      return await this.deps.failover.withLock('switchover-recovery', async () => {
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
      }, 30_000);
    } catch {
      return null;
    } finally {
      this.recovering = false;
    }
  }

  /** Before the promotion: puts the old primary back in charge (unfenced, writes resumed). */
  async rollback(s: { from: DatabaseTarget; to: DatabaseTarget; wasReadOnly: boolean; by: string }) {
    const steps: Outcome[] = [];
    await attempt(steps, 'unfence_old_primary', async () => {
      await this.deps.nodes.unfence(s.from);
      return `${s.from} takes writes again; ${s.to} stays its standby`;
    });
    if (!s.wasReadOnly) {
      await attempt(steps, 'read_only_off', async () => {
        await this.deps.barrier.release(`switchover to ${s.to} rolled back`, s.by);
        return 'writes resume';
      });
    }
    return { ok: steps.every((x) => x.ok), steps };
  }

  /** After the promotion: every instance to the promoted node, writes resumed. */
  async rollForward(s: { from: DatabaseTarget; to: DatabaseTarget; switched: boolean; wasReadOnly: boolean; by: string }) {
    const steps: Outcome[] = [];
    if (!s.switched) {
      await attempt(steps, 'switch', async () => {
        await this.deps.recordSwitch(s.to, s.by);
        return `every instance writes to ${s.to}`;
      });
    }
    if (!s.wasReadOnly && steps.every((x) => x.ok)) {
      await attempt(steps, 'read_only_off', async () => {
        await this.deps.barrier.release(`switchover to ${s.to} completed after a failed step`, s.by);
        return 'writes resume';
      });
    }
    steps.push({ name: 'next', ok: true, detail: `${s.from} stays fenced: rebuild it as a standby (rebuild-primary.sh --rewind)` });
    return { ok: steps.every((x) => x.ok), steps };
  }
}

async function attempt(steps: Outcome[], name: string, fn: () => Promise<string>): Promise<void> {
  try {
    steps.push({ name, ok: true, detail: await fn() });
  } catch (err) {
    steps.push({ name, ok: false, detail: err instanceof Error ? err.message : String(err) });
  }
}

