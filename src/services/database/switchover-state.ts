import { changeRetrying } from '../dr-state/dr-state-service.ts';
import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import { withActiveDatabase } from '../dr-state/database-state.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import type { ProbeRunner } from '../../health/probe-runner.ts';
import type { NodeWatch } from './node-watch.ts';
import type { SwitchoverDeps } from './switchover-types.ts';

/** The switchover's changes to the shared DR state: a switch to the promoted node, an abandoned promotion. */
export function switchoverStateChanges(deps: {
  dr: Pick<DrStateService, 'change' | 'current' | 'waitForInstances'>;
  watch: Pick<NodeWatch, 'identity'>;
  runners: ReadonlyMap<DatabaseTarget, ProbeRunner<DatabaseProbeData>>;
}): Pick<SwitchoverDeps, 'recordSwitch' | 'abandonPromotion' | 'forgetAbandoned'> {
  const { dr, watch, runners } = deps;
  return {
    forgetAbandoned: (node) => forgetAbandonedPromotions(dr, node),
    recordSwitch: async (to, by) => {
      // As a switch does: the node's identity is recorded with it, and its (newer) timeline when the
      // fresh probe shows it takes writes (it was promoted and its write check passed).
      await runners.get(to)?.run();
      const identity = watch.identity(to);
      const inRecovery = runners.get(to)?.latest()?.data?.inRecovery ?? null;
      await changeRetrying(dr, (s, now) => withActiveDatabase(s, to, identity, { inRecovery, by, now, promoted: true }));
    },
    abandonPromotion: async (node, timeline, by) => {
      // The cluster's system identifier from whichever node was last seen (the promoted one may be dead).
      const systemId =
        watch.identity(node)?.systemId ??
        watch.identity(node === 'primary' ? 'replica' : 'primary')?.systemId ??
        dr.current().database.nodes?.[node]?.systemId;
      if (!systemId) throw new Error(`the system identifier of ${node} is unknown: cannot record its promotion as abandoned`);
      const change = await dr.change((s, now) => ({
        ...s,
        database: {
          ...s.database,
          by,
          abandonedTimelines: [...(s.database.abandonedTimelines ?? []), { systemId, timeline, node, at: now }],
        },
      }));
      const p = await dr.waitForInstances(change.after.version, 3000);
      if (p.applied < p.total) throw new Error(`only ${p.applied}/${p.total} instances applied the abandoned promotion`);
    },
  };
}

/**
 * Before `node` is promoted again: it is a standby now, so it was rebuilt and the timeline of its
 * abandoned promotion is gone from it. A new promotion may reuse that timeline's number, so the
 * record goes first, and every live instance must have applied that (else one would fence the
 * newly promoted node as abandoned). Nothing to do, no state change, when nothing was abandoned.
 */
export async function forgetAbandonedPromotions(
  dr: Pick<DrStateService, 'change' | 'current' | 'waitForInstances'>,
  node: DatabaseTarget,
): Promise<void> {
  if (!(dr.current().database.abandonedTimelines ?? []).some((a) => a.node === node)) return;
  const change = await dr.change((s) => ({
    ...s,
    database: { ...s.database, abandonedTimelines: s.database.abandonedTimelines?.filter((a) => a.node !== node) },
  }));
  const p = await dr.waitForInstances(change.after.version, 3000);
  if (p.applied < p.total)
    throw new Error(`only ${p.applied}/${p.total} instances applied that ${node}'s abandoned promotion is forgotten: not promoting it`);
}
