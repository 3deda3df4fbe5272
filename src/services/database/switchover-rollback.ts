import type { DatabaseTarget } from '../../domain.ts';
import type { Check } from './failover-types.ts';
import {
  attempt,
  SWITCHOVER_WRITE_CHECK_MS,
  SwitchoverFailedError,
  type Outcome,
  type Step,
  type SwitchoverDeps,
} from './switchover-types.ts';

interface Situation {
  from: DatabaseTarget;
  to: DatabaseTarget;
  wasReadOnly: boolean;
  by: string;
}

/** Before the promotion: puts the old primary back in charge (unfenced, writes resumed). */
export async function rollBack(deps: SwitchoverDeps, s: Situation) {
  const steps: Outcome[] = [];
  await attempt(steps, 'unfence_old_primary', async () => {
    await deps.nodes.unfence(s.from);
    return `${s.from} takes writes again; ${s.to} stays its standby`;
  });
  if (!s.wasReadOnly) {
    await attempt(steps, 'read_only_off', async () => {
      await deps.barrier.release(`switchover to ${s.to} rolled back`, s.by);
      return 'writes resume';
    });
  }
  return { ok: steps.every((x) => x.ok), steps };
}

/**
 * The promoted node failed its write check (it died, hangs, or is read-only) before any instance
 * was switched to it: nothing acknowledged was written there, and the fenced old primary holds
 * everything. Its promotion is abandoned (recorded, so no instance counts its timeline as the
 * newest any more, and it is fenced should it take writes), the old primary is unfenced and
 * proven to take writes, and only then read-only mode is lifted. If the old primary cannot take
 * writes either, read-only mode stays on: `writable` is null.
 */
export async function rollBackAfterPromotion(deps: SwitchoverDeps, s: Situation & { timeline: number }) {
  const steps: Outcome[] = [];
  // Best effort: a promoted node that still answers must not take writes (a dead one fails fast).
  await attempt(steps, 'fence_promoted', async () => {
    const fence = await deps.nodes.fence(s.to);
    return `${s.to} fenced (${fence.terminated} sessions ended)`;
  });
  const abandoned = await attempt(steps, 'abandon_promotion', async () => {
    await deps.abandonPromotion(s.to, s.timeline, s.by);
    return `timeline ${s.timeline} of ${s.to} recorded as abandoned on every instance: ${s.from}'s timeline counts as the newest again`;
  });
  // Never unfence the old primary while an instance may still count the promoted timeline as the
  // newest: it would refuse and fence it again, or, worse, the pair would have two writers.
  const unfenced =
    abandoned &&
    (await attempt(steps, 'unfence_old_primary', async () => {
      await deps.nodes.unfence(s.from);
      return `${s.from} unfenced`;
    }));
  const active = deps.dr.current().database.active;
  const writes =
    unfenced &&
    active === s.from &&
    (await attempt(steps, 'verify_old_primary_writes', async () => {
      const w = await deps.nodes.verifyWrites(s.from, SWITCHOVER_WRITE_CHECK_MS);
      return `${s.from} committed a write at ${w.lsn} (timeline ${w.timeline}); the instances write to it`;
    }));
  if (writes && !s.wasReadOnly) {
    await attempt(steps, 'read_only_off', async () => {
      await deps.barrier.release(`switchover to ${s.to} rolled back after its promotion failed the write check`, s.by);
      return 'writes resume';
    });
  }
  if (!writes) {
    steps.push({
      name: 'read_only_kept',
      ok: false,
      detail: `neither ${s.to} nor ${s.from} is known to take writes: read-only mode stays on`,
    });
    if (!s.wasReadOnly)
      await keepReadOnly(deps, steps, `switchover to ${s.to} failed after its promotion and neither node takes writes`, s.by);
  }
  return { ok: steps.every((x) => x.ok || x.name === 'fence_promoted'), writable: writes ? s.from : null, steps };
}

/**
 * The switchover's own read-only mode carries a TTL (it lifts itself if the switchover dies
 * midway); after a failure past the promotion it must stay on until an operator acts: set again
 * without a TTL, with the reason.
 */
async function keepReadOnly(deps: SwitchoverDeps, steps: Outcome[], reason: string, by: string): Promise<void> {
  await attempt(steps, 'read_only_until_lifted', async () => {
    await deps.barrier.engage(`${reason}: read-only until an operator lifts it`, undefined, by);
    return "read-only mode stays on with no expiry (it was set with the switchover's TTL)";
  });
}

/** After the promotion, the promoted node proven to take writes: every instance to it, writes resumed. */
export async function rollForward(deps: SwitchoverDeps, s: Situation & { switched: boolean }) {
  const steps: Outcome[] = [];
  if (!s.switched) {
    await attempt(steps, 'switch', async () => {
      await deps.recordSwitch(s.to, s.by);
      return `every instance writes to ${s.to}`;
    });
  }
  if (!s.wasReadOnly && steps.every((x) => x.ok)) {
    await attempt(steps, 'read_only_off', async () => {
      await deps.barrier.release(`switchover to ${s.to} completed after a failed step`, s.by);
      return 'writes resume';
    });
  } else if (!s.wasReadOnly) {
    await keepReadOnly(deps, steps, `switchover to ${s.to} failed after its promotion and could not be completed`, s.by);
  }
  steps.push({ name: 'next', ok: true, detail: `${s.from} stays fenced: rebuild it as a standby (rebuild-primary.sh --rewind)` });
  return { ok: steps.every((x) => x.ok), steps };
}

/**
 * A step failed: before the promotion, back to the old primary; a promoted node that failed its
 * write check, back too with its promotion abandoned (or read-only kept on when neither node takes
 * writes); after the write check, forward. Throws the 503 saying which.
 */
export async function failSwitchover(
  deps: SwitchoverDeps,
  s: Situation & {
    switched: boolean;
    verified: boolean;
    promotedTimeline: number | null;
    failedStep: string;
    err: unknown;
    steps: Step[];
    checks: Check[];
  },
): Promise<never> {
  const { from, to, by, wasReadOnly, switched, verified, promotedTimeline, failedStep, err, steps, checks } = s;
  if (promotedTimeline !== null && verified) {
    // The promoted node took a write and holds the newest timeline; the old primary is fenced:
    // going back would put writes on an older timeline. Forward only.
    const forward = await rollForward(deps, { from, to, switched, wasReadOnly, by });
    deps.logger.error({ err, failedStep, forward }, 'switchover failed after the promotion; completed forward');
    throw new SwitchoverFailedError(
      forward.ok
        ? `switchover failed at ${failedStep} after ${to} was promoted; completed forward: ${to} is the primary and takes writes`
        : `switchover failed at ${failedStep} after ${to} was promoted, and completing it failed: switch to ${to} (POST /admin/database/switch) and lift read-only mode`,
      { failedStep, rolledBack: false, rolledForward: forward.ok, rollForward: forward.steps, steps, checks },
    );
  }
  if (promotedTimeline !== null) {
    const back = await rollBackAfterPromotion(deps, { from, to, wasReadOnly, by, timeline: promotedTimeline });
    deps.logger.error(
      { err, failedStep, back },
      back.writable
        ? 'switchover: the promoted node failed its write check; rolled back to the old primary'
        : 'switchover: NEITHER database node takes writes; read-only mode stays on',
    );
    throw new SwitchoverFailedError(
      back.writable
        ? `switchover failed at ${failedStep}: ${to} was promoted but takes no writes; rolled back: ${from} is the primary again and takes writes; ${to}'s timeline ${promotedTimeline} is abandoned (rebuild ${to} as a standby of ${from} from scratch: rebuild-primary.sh --discard-newer-timeline on its host)`
        : `switchover failed at ${failedStep}: ${to} was promoted but takes no writes, and ${from} could not be made to take writes again: NO DATABASE NODE TAKES WRITES, read-only mode stays on. ${from} (fenced, not stopped) holds every acknowledged write: unfence it by hand (ALTER SYSTEM RESET default_transaction_read_only) once ${to} cannot come back as a primary`,
      {
        failedStep,
        rolledBack: back.ok,
        writable: back.writable,
        abandonedTimeline: promotedTimeline,
        rollback: back.steps,
        steps,
        checks,
      },
    );
  }
  const rollback = await rollBack(deps, { from, to, wasReadOnly, by });
  deps.logger.error({ err, failedStep, rollback }, 'switchover failed; rolled back to the old primary');
  throw new SwitchoverFailedError(`switchover failed at ${failedStep}; rolled back: ${from} is the primary again and takes writes`, {
    failedStep,
    rolledBack: rollback.ok,
    rollback: rollback.steps,
    steps,
    checks,
  });
}
