import type { DatabaseTarget } from '../../domain.ts';
import { PreconditionFailedError } from '../../http/app-error.ts';
import { lsnGap } from './lsn.ts';
import { checkSwitchover } from './switchover-checks.ts';
import { SwitchoverRecovery } from './switchover-recovery.ts';
import { failSwitchover } from './switchover-rollback.ts';
import {
  SWITCHOVER_CATCH_UP_MS,
  SWITCHOVER_LOCK_TTL_MS,
  SWITCHOVER_MAX_LAG_BYTES,
  SWITCHOVER_READ_ONLY_REASON,
  SWITCHOVER_READ_ONLY_TTL_SECONDS,
  SWITCHOVER_WRITE_CHECK_MS,
  SwitchoverFailedError,
  type Step,
  type StepHook,
  type StepName,
  type SwitchoverDeps,
} from './switchover-types.ts';

export {
  SWITCHOVER_CATCH_UP_MS,
  SWITCHOVER_LOCK_TTL_MS,
  SWITCHOVER_MAX_LAG_BYTES,
  SWITCHOVER_READ_ONLY_TTL_SECONDS,
  SwitchoverFailedError,
  type Step,
  type StepHook,
  type StepName,
  type SwitchoverDeps,
};

/**
 * A planned switchover with zero loss: the standby must stream and be caught up; writes stop
 * (read-only mode and the write barrier); the old primary is fenced (read-only at the server,
 * its sessions ended) so nothing more can commit there; the standby replays up to the fenced
 * primary's last WAL position; it is promoted and must then commit a write; every instance
 * switches to it; writes resume; the old primary is stopped once the promoted node still takes
 * writes. A step failing before the promotion, or a promoted node failing its write check (no
 * instance wrote to it yet), rolls back to the old primary; a failure after the write check
 * completes forward (writes never go back to an older timeline). Either way the answer says so.
 */
export class SwitchoverService {
  hook?: StepHook;
  private readonly recovery: SwitchoverRecovery;

  constructor(private readonly deps: SwitchoverDeps) {
    this.hook = deps.hook;
    this.recovery = new SwitchoverRecovery(deps);
  }

  /** See SwitchoverRecovery.recoverInterrupted. */
  recoverInterrupted(active: DatabaseTarget): Promise<string | null> {
    return this.recovery.recoverInterrupted(active);
  }

  check(to: DatabaseTarget, maxLagBytes: number) {
    return checkSwitchover(this.deps, to, maxLagBytes);
  }

  async switchover(input: { to: DatabaseTarget; dryRun: boolean; maxLagBytes?: number }, by: string) {
    const { to } = input;
    const { checks, from, done } = await this.check(to, input.maxLagBytes ?? SWITCHOVER_MAX_LAG_BYTES);
    if (done)
      return {
        switched: false,
        dryRun: input.dryRun,
        from,
        to,
        roles: { [to]: 'primary' },
        message: `${to} is already the primary and the active target; nothing to do`,
        checks,
      };
    const failed = checks.filter((c) => !c.ok);
    if (input.dryRun) return { switched: false, dryRun: true, wouldSwitch: failed.length === 0, from, to, checks };
    if (failed.length > 0) {
      this.deps.metrics.failoverTotal.inc({ kind: 'switchover', result: 'refused' });
      throw new PreconditionFailedError(`switchover refused: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`, { checks });
    }
    return this.deps.failover.withLock(
      'switchover',
      async () => {
        // Again under the lock: another DR operation may have changed the pair since the checks.
        const again = await this.check(to, input.maxLagBytes ?? SWITCHOVER_MAX_LAG_BYTES);
        const now = again.checks.filter((c) => !c.ok);
        if (again.done || now.length > 0) {
          this.deps.metrics.failoverTotal.inc({ kind: 'switchover', result: 'refused' });
          throw new PreconditionFailedError(
            `switchover refused: ${again.done ? `${to} became the primary meanwhile` : now.map((c) => `${c.name} (${c.detail})`).join('; ')}`,
            { checks: again.checks },
          );
        }
        return this.run(from, to, by, again.checks);
      },
      SWITCHOVER_LOCK_TTL_MS,
    );
  }

  private async run(from: DatabaseTarget, to: DatabaseTarget, by: string, checks: { name: string; ok: boolean; detail: string }[]) {
    const steps: Step[] = [];
    const wasReadOnly = this.deps.readOnly.isActive();
    let fenceLsn: string | null = null;
    let replayLsn: string | null = null;
    let writesStoppedAt = 0;
    let promotedTimeline: number | null = null;
    let verified = false;
    let switched = false;
    const step = async (name: StepName, fn: () => Promise<string>) => {
      const started = performance.now();
      try {
        await this.hook?.(name);
        const detail = await fn();
        steps.push({ name, ok: true, ms: Math.round(performance.now() - started), detail });
      } catch (err) {
        steps.push({
          name,
          ok: false,
          ms: Math.round(performance.now() - started),
          detail: err instanceof Error ? err.message : String(err),
        });
        throw err;
      }
    };
    const verifyPromoted = async () => {
      const w = await this.deps.nodes.verifyWrites(to, SWITCHOVER_WRITE_CHECK_MS);
      return `${to} is out of recovery and committed a write at ${w.lsn} on timeline ${w.timeline}`;
    };
    const started = performance.now();
    try {
      await step('read_only_on', async () => {
        writesStoppedAt = performance.now();
        // An operator's read-only mode stays exactly as they set it (reason, TTL).
        if (wasReadOnly) return 'read-only mode was already on: kept as it is';
        const r = await this.deps.barrier.engage(`${SWITCHOVER_READ_ONLY_REASON} ${from} to ${to}`, SWITCHOVER_READ_ONLY_TTL_SECONDS, by);
        return `read-only mode on every instance (${r.applied}/${r.total} applied)`;
      });
      await step('fence_old_primary', async () => {
        const fence = await this.deps.nodes.fence(from);
        fenceLsn = fence.lsn;
        return `${from} takes no more writes (default_transaction_read_only, ${fence.terminated} sessions ended); its WAL ends at ${fence.lsn}`;
      });
      await step('wait_for_replay', async () => {
        replayLsn = await this.deps.nodes.waitForReplay(to, fenceLsn!, SWITCHOVER_CATCH_UP_MS);
        return `${to} replayed up to ${replayLsn}`;
      });
      await step('promote', async () => {
        await this.deps.forgetAbandoned(to);
        promotedTimeline = (await this.deps.nodes.promote(to)).timeline;
        return `${to} promoted (pg_promote), now on timeline ${promotedTimeline}`;
      });
      // Before any instance is pointed at it and before the old primary may go: the promoted node
      // must really take writes (it may have died or hung right after the promotion).
      await step('verify_writes', async () => {
        const detail = await verifyPromoted();
        verified = true;
        return detail;
      });
      await step('switch', async () => {
        await this.deps.recordSwitch(to, by);
        switched = true;
        const p = await this.deps.dr.waitForInstances(this.deps.dr.current().version);
        const stale = p.stale.length > 0 ? `; past their lease, refusing writes: ${p.stale.map((i) => i.id).join(', ')}` : '';
        const missing = p.complete ? '' : `; NOT applied by live instances: ${p.notApplied.join(', ')}`;
        return `every instance that applied it writes to ${to} (${p.applied}/${p.total} applied${stale}${missing})`;
      });
      await step('read_only_off', async () => {
        if (wasReadOnly) return 'read-only mode was on before the switchover: left on';
        await this.deps.barrier.release(`switchover to ${to} done`, by);
        return 'writes resume';
      });
    } catch (err) {
      this.deps.metrics.failoverTotal.inc({ kind: 'switchover', result: 'failed' });
      const failedStep = steps.find((s) => !s.ok)?.name ?? 'unknown';
      return failSwitchover(this.deps, { from, to, by, wasReadOnly, switched, verified, promotedTimeline, failedStep, err, steps, checks });
    }
    const writeUnavailableMs = Math.round(performance.now() - writesStoppedAt);
    // Last, outside the write pause, and never before the promotion: a stopped primary could not
    // be brought back by a rollback (the API reaches the nodes over SQL only). Never while the
    // promoted node does not take writes. A failure of the stop itself changes nothing for the
    // data: the old primary stays fenced.
    let promotedWrites = true;
    const stopped = await step('stop_old_primary', async () => {
      const detail = await verifyPromoted().catch((err: unknown) => {
        promotedWrites = false;
        throw new Error(`${from} not stopped: ${to} no longer takes writes (${err instanceof Error ? err.message : String(err)})`);
      });
      await this.deps.nodes.stop(from);
      return `${detail}; ${from} stopped (fast shutdown); it stays fenced when started again`;
    }).then(
      () => true,
      () => false,
    );
    const bytesLost = lsnGap(fenceLsn!, replayLsn!);
    if (!promotedWrites) {
      this.deps.metrics.failoverTotal.inc({ kind: 'switchover', result: 'failed' });
      this.deps.logger.error(
        { from, to, steps },
        'switchover: the promoted node stopped taking writes after the switch; the old primary was not stopped',
      );
      throw new SwitchoverFailedError(
        `switchover failed at stop_old_primary: ${to} took writes after the switch, then stopped taking them; ${from} was not stopped and stays fenced (it lacks what ${to} acknowledged since): bring ${to} back, do not unfence ${from}`,
        { failedStep: 'stop_old_primary', rolledBack: false, rolledForward: false, steps, checks, bytesLost },
      );
    }
    this.deps.metrics.failoverTotal.inc({ kind: 'switchover', result: 'success' });
    this.deps.logger.warn({ from, to, writeUnavailableMs, bytesLost }, 'switchover done');
    return {
      switched: true,
      dryRun: false,
      from,
      to,
      roles: { [to]: 'primary', [from]: stopped ? 'stopped' : 'fenced' },
      checks,
      steps,
      writeUnavailableMs: wasReadOnly ? 0 : writeUnavailableMs,
      bytesLost,
      fencedLsn: fenceLsn,
      replayedLsn: replayLsn,
      totalMs: Math.round(performance.now() - started),
      next: `make ${from} a standby of ${to}: on its host, scripts/dr/rebuild-primary.sh --rewind --pgdata <its data directory> --source <${to}'s connection> --confirm${stopped ? '' : ` (it could not be stopped from SQL: the rebuild stops it)`}`,
    };
  }
}
