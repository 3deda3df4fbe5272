import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import { PreconditionFailedError } from '../../http/app-error.ts';
import { withActiveDatabase } from '../dr-state/database-state.ts';
import { restorePointBefore } from '../backup/restore-point.ts';
import type { Check, FailoverDeps, FailoverOps } from './failover-types.ts';
import { fenceNode } from './node-fence.ts';

/** POST /admin/database/switch: every instance to a target, refused onto an older timeline or a fenced node. */
export class DatabaseSwitch {
  constructor(
    private readonly deps: FailoverDeps,
    private readonly ops: FailoverOps,
  ) {}

  /** Which configured node holds which role, from the latest probes (undefined without a replica). */
  private roles() {
    if (!this.deps.runners.has('replica')) return undefined;
    return this.deps.monitor.report(this.deps.runners.get('primary')?.latest(), this.deps.runners.get('replica')?.latest()).roles;
  }

  private async fenceFormerPrimary(from: DatabaseTarget, to: DatabaseProbeData | undefined) {
    if (!to || to.inRecovery || to.timeline === null) return null;
    // Only a node last seen taking writes is probed again (a dead one would cost a probe timeout).
    const last = this.deps.runners.get(from)?.latest();
    if (!last?.ok || last.data?.inRecovery || last.data?.fenced) return null;
    const old = await this.ops.probe(from);
    const data = old?.ok ? old.data : undefined;
    if (!data || data.inRecovery || data.fenced || data.timeline === null || data.systemId !== to.systemId || data.timeline >= to.timeline)
      return null;
    const { terminated } = await fenceNode(this.deps.clients.url(from)!, 2000);
    this.deps.runners.get(from)?.invalidate();
    this.deps.logger.warn({ from, terminated }, 'switch: the former primary still took writes; fenced it first');
    return {
      fenced: true,
      detail: `${from} was on timeline ${data.timeline}: default_transaction_read_only set, ${terminated} sessions ended`,
    };
  }

  async switchDatabase(input: { to: DatabaseTarget; dryRun: boolean }, by: string) {
    const { to } = input;
    const checks: Check[] = [];
    const url = this.deps.clients.url(to);
    checks.push({ name: 'target_configured', ok: url !== undefined, detail: url ? `${to} is configured` : `${to} is not configured` });
    const probe = url ? await this.ops.probe(to) : undefined;
    if (url)
      checks.push({
        name: 'target_reachable',
        ok: probe?.ok === true,
        detail: probe?.ok ? `answered in ${probe.latencyMs} ms` : `no answer: ${probe?.error?.code ?? 'unknown'}`,
      });
    const inRecovery = probe?.ok ? probe.data?.inRecovery === true : null;
    const newest = this.deps.watch.newestTimeline(probe?.data?.systemId ?? null);
    if (probe?.ok && inRecovery === false && probe.data?.timeline != null && newest !== null) {
      const tl = probe.data.timeline;
      const abandoned = this.deps.watch.abandoned(probe.data.systemId, tl);
      checks.push({
        name: 'newest_timeline',
        ok: tl >= newest && !abandoned,
        detail: abandoned
          ? `${to} is on timeline ${tl}, a promotion a switchover abandoned: rebuild it as a standby first`
          : tl >= newest
            ? `${to} is on timeline ${tl}, the newest`
            : `${to} is on timeline ${tl}, older than ${newest}: a former primary must be rebuilt as a standby first`,
      });
    }
    if (probe?.ok && inRecovery === false && probe.data?.fenced) {
      checks.push({ name: 'not_fenced', ok: false, detail: `${to} is fenced read-only (default_transaction_read_only)` });
    }
    if (inRecovery) {
      const readOnly = this.deps.readOnlyActive();
      checks.push({
        name: 'read_only_for_standby',
        ok: readOnly,
        detail: readOnly
          ? `${to} is a standby; read-only mode is on, so it may serve reads`
          : `${to} is a standby (not promoted): switch to it only while read-only mode is on`,
      });
    }
    const current = this.deps.dr.current().database.active;
    const failed = checks.filter((c) => !c.ok);
    const roles = this.roles();
    if (input.dryRun)
      return { changed: false, dryRun: true, wouldSwitch: failed.length === 0 && current !== to, from: current, to, roles, checks };
    if (failed.length > 0) {
      this.deps.metrics.failoverTotal.inc({ kind: 'database_switch', result: 'refused' });
      throw new PreconditionFailedError(`switch refused: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`, { checks });
    }
    if (current === to)
      return { changed: false, dryRun: false, from: current, to, roles, checks, message: `${to} is already the active target` };
    return this.ops.withLock('switch', async () => {
      // Switching away from a former primary that still takes writes (promoted elsewhere, never
      // fenced): fence it before the switch is decided, so no instance commits there afterwards.
      const oldTarget = await this.fenceFormerPrimary(current, probe?.data);
      const restorePoint = await restorePointBefore(this.deps.clients.url(current), `before-switch-to-${to}`);
      const identity = this.deps.watch.identity(to);
      const change = await this.deps.dr.change((s, now) => {
        // Checked above on this instance's copy: a lift stored meanwhile (on any instance) refuses
        // the switch onto a standby instead of leaving writes open onto it.
        if (inRecovery && !s.readOnly.enabled)
          throw new PreconditionFailedError(
            `switch refused: read_only_for_standby (${to} is a standby and read-only mode was lifted while the switch was checked); nothing was changed`,
            {
              checks: [
                ...checks.filter((c) => c.name !== 'read_only_for_standby'),
                {
                  name: 'read_only_for_standby',
                  ok: false,
                  detail: `${to} is a standby (not promoted): switch to it only while read-only mode is on`,
                },
              ],
            },
          );
        return withActiveDatabase(s, to, identity, { inRecovery, by, now });
      });
      this.deps.metrics.failoverTotal.inc({ kind: 'database_switch', result: 'success' });
      return {
        changed: true,
        dryRun: false,
        from: change.before.database.active,
        to,
        inRecovery,
        roles,
        checks,
        restorePoint,
        ...(oldTarget ? { oldTarget } : {}),
        change,
      };
    });
  }
}
