import type { DatabaseTarget } from '../../domain.ts';
import type { DatabaseState, DrState, NodeIdentity } from './dr-state.ts';

/**
 * Records a node's identity in the database part of the DR state. The newest timeline moves only
 * for a node known to take writes (`inRecovery: false`): a standby replays its upstream's history,
 * and a node of unknown role proves nothing, so neither may ever raise it (one writable primary,
 * issue 10). Without an identity nothing is recorded.
 */
export function withNodeRecorded(
  db: DatabaseState,
  node: DatabaseTarget,
  identity: NodeIdentity | null,
  seen: { inRecovery: boolean | null },
): DatabaseState {
  if (!identity) return db;
  const recorded: DatabaseState = { ...db, nodes: { ...db.nodes, [node]: identity } };
  if (seen.inRecovery === false) recorded.newestTimeline = Math.max(db.newestTimeline ?? 0, identity.timeline);
  return recorded;
}

/**
 * A promotion recorded now: automatic read-only never switches back after it, and it supersedes an
 * abandoned promotion on the same timeline of the same cluster (only a node known to take writes
 * can be the promoted one).
 */
export function withPromotionRecorded(
  db: DatabaseState,
  identity: NodeIdentity | null,
  seen: { inRecovery: boolean | null },
  now: string,
): DatabaseState {
  const promoted = identity && seen.inRecovery === false ? identity : null;
  return {
    ...db,
    promotedAt: now,
    abandonedTimelines: promoted
      ? db.abandonedTimelines?.filter((a) => a.systemId !== promoted.systemId || a.timeline !== promoted.timeline)
      : db.abandonedTimelines,
  };
}

/**
 * The state with `to` as the active database target, set by `by` at `now`, its identity recorded
 * (see withNodeRecorded: a standby never moves the newest timeline); `promoted` when the switch
 * follows a promotion of `to` (see withPromotionRecorded). The one way every switch, switchover,
 * automatic read-only and reset sets the active database.
 */
export function withActiveDatabase<S extends Pick<DrState, 'database'>>(
  state: S,
  to: DatabaseTarget,
  identity: NodeIdentity | null,
  opts: { inRecovery: boolean | null; by: string; now: string; promoted?: boolean },
): S {
  let database = withNodeRecorded({ ...state.database, active: to, since: opts.now, by: opts.by }, to, identity, opts);
  if (opts.promoted) database = withPromotionRecorded(database, identity, opts, opts.now);
  return { ...state, database };
}
