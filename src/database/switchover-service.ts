import type { DatabaseTarget } from '../domain.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import { AppError, PreconditionFailedError } from '../http/app-error.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { ReadOnlyService } from '../read-only/read-only-service.ts';
import type { DatabaseClients } from './database-clients.ts';
import type { Check, DatabaseFailoverService } from './database-failover-service.ts';
import { lsnGap } from './lsn.ts';
import type { NodeFacts, SqlNodes } from './sql-nodes.ts';
import { SWITCHOVER_READ_ONLY_REASON, SwitchoverRecovery } from './switchover-recovery.ts';
import type { WriteBarrier } from './write-barrier.ts';

/** How far behind the standby may be when a switchover starts: it must catch up within the window. */
export const SWITCHOVER_MAX_LAG_BYTES = 16 * 1024 * 1024;
/** Bound on the wait for the standby to replay everything the fenced primary wrote. */
export const SWITCHOVER_CATCH_UP_MS = 5000;
/** Read-only mode of a switchover lifts itself if the switchover dies midway. */
export const SWITCHOVER_READ_ONLY_TTL_SECONDS = 60;
/** The lock outlives the longest switchover (every step bounded), and no more: see recoverInterrupted. */
export const SWITCHOVER_LOCK_TTL_MS = 60_000;

export type StepName = 'read_only_on' | 'fence_old_primary' | 'wait_for_replay' | 'promote' | 'switch' | 'read_only_off' | 'stop_old_primary';
export interface Step {
  name: StepName;
  ok: boolean;
  ms: number;
  detail: string;
}

/** Test seam: runs before each step (a fault injected here interrupts the switchover there). */
export type StepHook = (step: StepName) => Promise<void> | void;

export class SwitchoverFailedError extends AppError {
  constructor(message: string, extra: Record<string, unknown>) {
    super(503, 'switchover_failed', message, extra);
  }
}

const other = (t: DatabaseTarget): DatabaseTarget => (t === 'primary' ? 'replica' : 'primary');

/** What the switchover needs of its neighbours: narrow, so a test can hand it fakes. */
export interface SwitchoverDeps {
  clients: Pick<DatabaseClients, 'has'>;
  nodes: Pick<SqlNodes, 'facts' | 'fence' | 'unfence' | 'waitForReplay' | 'promote' | 'stop'>;
  failover: Pick<DatabaseFailoverService, 'withLock' | 'lockHolder'>;
  dr: Pick<DrStateService, 'current' | 'waitForInstances'>;
  readOnly: Pick<ReadOnlyService, 'isActive'>;
  barrier: WriteBarrier;
  metrics: Pick<Metrics, 'failoverTotal'>;
  logger: Pick<Logger, 'warn' | 'error'>;
  hook?: StepHook;
  /** Makes `to` the active target of every instance, recording its identity and timeline. */
  recordSwitch: (to: DatabaseTarget, by: string) => Promise<void>;
  /** Records a recovery of an interrupted switchover (the audit log). */
  onRecovered?: (what: string) => Promise<void>;
}

/**
 * A planned switchover with zero loss: the standby must stream and be caught up; writes stop
 * (read-only mode and the write barrier); the old primary is fenced (read-only at the server,
 * its sessions ended) so nothing more can commit there; the standby replays up to the fenced
 * primary's last WAL position; it is promoted; every instance switches to it; writes resume. A
 * step failing before the promotion rolls back to the old primary (unfenced, active, writes
 * resume); after it, the switchover completes forward (writes never go back to an older
 * timeline). Either way the answer says so.
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

  async check(to: DatabaseTarget, maxLagBytes: number): Promise<{ checks: Check[]; from: DatabaseTarget; facts: Partial<Record<DatabaseTarget, NodeFacts>>; done: boolean }> {
    const from = other(to);
    const checks: Check[] = [];
    const configured = this.deps.clients.has('primary') && this.deps.clients.has('replica');
    checks.push({ name: 'pair_configured', ok: configured, detail: configured ? 'DATABASE_URL and DATABASE_REPLICA_URL are set' : 'a switchover needs both DATABASE_URL and DATABASE_REPLICA_URL' });
    if (!configured) return { checks, from, facts: {}, done: false };
    const [f, t] = await Promise.all([this.deps.nodes.facts(from), this.deps.nodes.facts(to)]);
    const facts = { [from]: f, [to]: t } as Partial<Record<DatabaseTarget, NodeFacts>>;
    if (t.ok && !t.inRecovery && (!f.ok || f.inRecovery || f.fenced) && this.deps.dr.current().database.active === to) {
      return { checks, from, facts, done: true };
    }
    checks.push({ name: 'old_primary_is_primary', ok: f.ok && !f.inRecovery, detail: !f.ok ? `${from} does not answer: ${f.error}` : f.inRecovery ? `${from} is a standby, not the primary` : `${from} is the primary (timeline ${f.timeline})` });
    const active = this.deps.dr.current().database.active;
    checks.push({ name: 'old_primary_is_active', ok: active === from, detail: `the instances write to ${active}` });
    checks.push({ name: 'target_is_standby', ok: t.ok && t.inRecovery, detail: !t.ok ? `${to} does not answer: ${t.error}` : t.inRecovery ? `${to} is a standby` : `${to} is not in recovery` });
    if (f.ok && t.ok && t.inRecovery) {
      const streaming = t.receiverStatus === 'streaming' && f.streamingStandbys > 0;
      checks.push({ name: 'target_streaming', ok: streaming, detail: `${to} WAL receiver: ${t.receiverStatus ?? 'none'}; standbys streaming from ${from}: ${f.streamingStandbys}` });
      checks.push({ name: 'target_replaying', ok: !t.replayPaused, detail: t.replayPaused ? `WAL replay on ${to} is paused (pg_wal_replay_resume)` : 'WAL replay runs' });
      const lag = f.currentLsn && t.replayLsn ? lsnGap(f.currentLsn, t.replayLsn) : null;
      checks.push({ name: 'target_caught_up', ok: lag !== null && lag <= maxLagBytes, detail: lag === null ? 'replay position unknown' : `${to} replayed up to ${lag} bytes behind ${from} (bound ${maxLagBytes})` });
    }
    return { checks, from, facts, done: false };
  }

  async switchover(input: { to: DatabaseTarget; dryRun: boolean; maxLagBytes?: number }, by: string) {
    const { to } = input;
    const { checks, from, done } = await this.check(to, input.maxLagBytes ?? SWITCHOVER_MAX_LAG_BYTES);
    if (done) return { switched: false, dryRun: input.dryRun, from, to, message: `${to} is already the primary and the active target; nothing to do`, checks };
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
          throw new PreconditionFailedError(`switchover refused: ${again.done ? `${to} became the primary meanwhile` : now.map((c) => `${c.name} (${c.detail})`).join('; ')}`, { checks: again.checks });
        }
        return this.run(from, to, by, again.checks);
      },
      SWITCHOVER_LOCK_TTL_MS,
    );
  }

  private async run(from: DatabaseTarget, to: DatabaseTarget, by: string, checks: Check[]) {
    const steps: Step[] = [];
    const wasReadOnly = this.deps.readOnly.isActive();
    let fenceLsn: string | null = null;
    let replayLsn: string | null = null;
    let writesStoppedAt = 0;
    let promoted = false;
    let switched = false;
    const step = async (name: StepName, fn: () => Promise<string>) => {
      const started = performance.now();
      try {
        await this.hook?.(name);
        const detail = await fn();
        steps.push({ name, ok: true, ms: Math.round(performance.now() - started), detail });
      } catch (err) {
        steps.push({ name, ok: false, ms: Math.round(performance.now() - started), detail: err instanceof Error ? err.message : String(err) });
        throw err;
      }
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
        await this.deps.nodes.promote(to);
        promoted = true;
        return `${to} promoted (pg_promote)`;
      });
      await step('switch', async () => {
        await this.deps.recordSwitch(to, by);
        switched = true;
        const p = await this.deps.dr.waitForInstances(this.deps.dr.current().version, 1500);
        return `every instance writes to ${to} (${p.applied}/${p.total} applied)`;
      });
      await step('read_only_off', async () => {
        if (wasReadOnly) return 'read-only mode was on before the switchover: left on';
        await this.deps.barrier.release(`switchover to ${to} done`, by);
        return 'writes resume';
      });
    } catch (err) {
      this.deps.metrics.failoverTotal.inc({ kind: 'switchover', result: 'failed' });
      const failedStep = steps.find((s) => !s.ok)?.name ?? 'unknown';
      if (promoted) {
        // Past the promotion the promoted node holds everything and the newest timeline, and the
        // old primary is fenced: going back would put writes on an older timeline. Forward only.
        const forward = await this.recovery.rollForward({ from, to, switched, wasReadOnly, by });
        this.deps.logger.error({ err, failedStep, forward }, 'switchover failed after the promotion; completed forward');
        throw new SwitchoverFailedError(
          forward.ok
            ? `switchover failed at ${failedStep} after ${to} was promoted; completed forward: ${to} is the primary and takes writes`
            : `switchover failed at ${failedStep} after ${to} was promoted, and completing it failed: switch to ${to} (POST /admin/database/switch) and lift read-only mode`,
          { failedStep, rolledBack: false, rolledForward: forward.ok, rollForward: forward.steps, steps, checks },
        );
      }
      const rollback = await this.recovery.rollback({ from, to, wasReadOnly, by });
      this.deps.logger.error({ err, failedStep, rollback }, 'switchover failed; rolled back to the old primary');
      throw new SwitchoverFailedError(`switchover failed at ${failedStep}; rolled back: ${from} is the primary again and takes writes`, {
        failedStep,
        rolledBack: rollback.ok,
        rollback: rollback.steps,
        steps,
        checks,
      });
    }
    const writeUnavailableMs = Math.round(performance.now() - writesStoppedAt);
    // Last, outside the write pause, and never before the promotion: a stopped primary could not
    // be brought back by a rollback (the API reaches the nodes over SQL only). A failure here
    // changes nothing for the data: the old primary stays fenced.
    const stopped = await step('stop_old_primary', async () => {
      await this.deps.nodes.stop(from);
      return `${from} stopped (fast shutdown); it stays fenced when started again`;
    }).then(
      () => true,
      () => false,
    );
    const bytesLost = lsnGap(fenceLsn!, replayLsn!);
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
