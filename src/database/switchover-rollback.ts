import type { DatabaseTarget } from '../config/config.ts';
import { attempt, SWITCHOVER_WRITE_CHECK_MS, type Outcome, type SwitchoverDeps } from './switchover-types.ts';

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
  if (!writes) steps.push({ name: 'read_only_kept', ok: false, detail: `neither ${s.to} nor ${s.from} is known to take writes: read-only mode stays on` });
  return { ok: steps.every((x) => x.ok || x.name === 'fence_promoted'), writable: writes ? s.from : null, steps };
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
  }
  steps.push({ name: 'next', ok: true, detail: `${s.from} stays fenced: rebuild it as a standby (rebuild-primary.sh --rewind)` });
  return { ok: steps.every((x) => x.ok), steps };
}
