import type { DatabaseProbeData } from '../../domain.ts';
import type { AuditLog } from '../audit/audit-log.ts';
import { readOnlyActive } from '../dr-state/dr-state.ts';
import { withActiveDatabase } from '../dr-state/database-state.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import type { ProbeResult } from '../../health/probe-runner.ts';
import type { Logger } from '../../logger.ts';

export const AUTO_ACTOR = 'system:auto-read-only';

/**
 * A promotion recorded since this mode went on: the reads were switched for an outage that became a
 * failover. One recorded before (an earlier failover, since failed back) says nothing about this one.
 */
function promotedSince(state: { readOnly: { since: string | null }; database: { promotedAt?: string | null } }): boolean {
  const at = state.database.promotedAt;
  if (!at) return false;
  return !state.readOnly.since || Date.parse(at) >= Date.parse(state.readOnly.since);
}

/**
 * Optional (AUTO_READ_ONLY=true): after N failed probes of the primary while the replica answers,
 * turns read-only mode on and serves reads from the replica, as Discourse does. It never promotes.
 * After M good probes of the primary it switches reads back and lifts the read-only mode, but
 * only a mode it set itself: once an operator has changed read-only mode or the target, it is theirs.
 * It never switches back after a promotion (recorded in the DR state, or a replica seen out of
 * recovery), nor to a primary on an older timeline than the newest known: that is a split brain.
 */
export class AutoReadOnly {
  private failures = 0;
  private recoveries = 0;
  private busy = false;

  constructor(
    private readonly deps: {
      dr: DrStateService;
      audit: AuditLog;
      logger: Logger;
      failuresToEngage: number;
      recoveriesToRelease: number;
      replica: () => ProbeResult<DatabaseProbeData> | undefined;
      /** False when the primary is on an older timeline than the newest known, or fenced. */
      primaryCurrent: () => boolean;
    },
  ) {}

  observePrimary(result: ProbeResult<DatabaseProbeData>): void {
    const primaryOk = result.ok && result.data?.inRecovery === false;
    if (primaryOk) {
      this.recoveries += 1;
      this.failures = 0;
    } else {
      this.failures += 1;
      this.recoveries = 0;
    }
    if (this.busy) return;
    const state = this.deps.dr.current();
    const ours = state.readOnly.by === AUTO_ACTOR && state.database.by === AUTO_ACTOR;
    const promoted = promotedSince(state) || this.deps.replica()?.data?.inRecovery === false;
    if (
      !primaryOk &&
      this.failures >= this.deps.failuresToEngage &&
      state.database.active === 'primary' &&
      !readOnlyActive(state, Date.now())
    ) {
      const replica = this.deps.replica();
      if (replica?.ok) void this.run('auto_read_only.engage', true);
    } else if (
      primaryOk &&
      this.recoveries >= this.deps.recoveriesToRelease &&
      ours &&
      !promoted &&
      this.deps.primaryCurrent() &&
      state.readOnly.enabled &&
      state.database.active === 'replica'
    ) {
      void this.run('auto_read_only.release', false);
    }
  }

  private async run(action: string, engage: boolean): Promise<void> {
    this.busy = true;
    try {
      const change = await this.deps.dr.change((s, now) => {
        // Re-checked on the newest state: an operator's change since our decision wins.
        if (!engage && (s.readOnly.by !== AUTO_ACTOR || s.database.by !== AUTO_ACTOR || promotedSince(s)))
          throw new Error('the operator changed the state meanwhile');
        if (engage && (s.database.active !== 'primary' || s.readOnly.enabled)) throw new Error('the state changed meanwhile');
        // Only the target moves: nothing was probed here, so no node identity is recorded.
        return withActiveDatabase(
          {
            ...s,
            readOnly: engage
              ? {
                  enabled: true,
                  reason: `automatic: the primary failed ${this.failures} probes; reads are served by the replica`,
                  since: now,
                  by: AUTO_ACTOR,
                  expiresAt: null,
                }
              : { enabled: false, reason: 'automatic: the primary answers again', since: now, by: AUTO_ACTOR, expiresAt: null },
          },
          engage ? 'replica' : 'primary',
          null,
          { inRecovery: null, by: AUTO_ACTOR, now },
        );
      });
      this.deps.logger.warn(
        { action, version: change.after.version },
        engage ? 'primary down: read-only mode on, reads from the replica' : 'primary back: reads switched back, read-only mode lifted',
      );
      await this.deps.audit.record({
        actor: AUTO_ACTOR,
        role: null,
        action,
        result: 'success',
        before: change.before,
        after: change.after,
        detail: null,
        requestId: null,
      });
    } catch (err) {
      // Another instance made the same move first (409), or Redis is down (503): nothing to do now.
      this.deps.logger.info({ action, err: err instanceof Error ? err.message : String(err) }, 'automatic read-only change not made');
    } finally {
      this.busy = false;
    }
  }
}
