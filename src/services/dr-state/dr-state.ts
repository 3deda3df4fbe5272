import type { DatabaseTarget, MediaBackendName } from '../../domain.ts';

export interface ReadOnlyState {
  enabled: boolean;
  reason: string | null;
  since: string | null;
  by: string | null;
  expiresAt: string | null;
  /**
   * Set when a TTL was reached but the expiry was refused (the active target could not be verified
   * writable): the mode stays on and says why. Optional: states written before it existed apply.
   */
  ttlExpiryRefused?: { reason: string; at: string; expiresAt: string } | null;
}

export interface TargetState<T extends string> {
  active: T;
  since: string | null;
  by: string | null;
}

/** A PostgreSQL node as the service saw it: cluster system identifier and timeline. */
export interface NodeIdentity {
  systemId: string;
  timeline: number;
  recordedAt: string;
}

/**
 * The database part: which target serves, plus what promotions and switches recorded. Fields
 * beyond TargetState are optional so states written before they existed still apply.
 */
export interface DatabaseState extends TargetState<DatabaseTarget> {
  /** Each configured target's identity, recorded at every promote and switch. */
  nodes?: Partial<Record<DatabaseTarget, NodeIdentity>>;
  /** The newest timeline recorded for the cluster: writes never go to a node on an older one. */
  newestTimeline?: number;
  /** When a promotion was recorded (automatic read-only never switches back after one). */
  promotedAt?: string | null;
  /**
   * Timelines of promotions a switchover abandoned: the promoted node failed its write check
   * before any instance wrote to it, and the old primary took over again. They count for nothing
   * as "newest", and a node taking writes on one is fenced like a former primary.
   */
  abandonedTimelines?: AbandonedTimeline[];
}

export interface AbandonedTimeline {
  systemId: string;
  timeline: number;
  node: DatabaseTarget;
  at: string;
}

/** The one versioned document every instance follows. */
export interface DrState {
  version: number;
  readOnly: ReadOnlyState;
  database: DatabaseState;
  media: TargetState<MediaBackendName>;
  updatedAt: string | null;
  /**
   * Set on the state a fresh instance (no state file) seeds blindly into an empty Redis (never on a
   * change made on top of it): any instance holding a copy that was not seeded so (it knew the real
   * state, e.g. read-only on, before it was paused or partitioned) puts its copy back over it when it
   * returns (issue 10 F2).
   */
  seeded?: boolean;
}

export const INITIAL_STATE: DrState = {
  version: 0,
  readOnly: { enabled: false, reason: null, since: null, by: null, expiresAt: null },
  database: { active: 'primary', since: null, by: null },
  media: { active: 'primary', since: null, by: null },
  updatedAt: null,
};

export interface InstanceHeartbeat {
  id: string;
  appliedVersion: number;
  lastSeen: string;
  /** The write barrier this instance raised when it applied the last write-relevant change. */
  barrier?: { version: number; inFlight: number; waitedFor: number; drained: boolean; failing: number; waitedMs: number };
  /**
   * Set while this instance found the shared state missing from Redis and cannot vouch for its own
   * copy (its lease had run out): its copy is a candidate (`appliedVersion`), and `peers` are the
   * instances that were live when it last confirmed the state, any of which may hold a newer one.
   */
  stateLost?: { since: string; peers: string[] };
}

/**
 * Read-only mode as it holds now. A TTL that has passed does not lift the mode by itself: only an
 * expiry recorded in the shared state does (see ReadOnlyService), and that is refused unless the
 * active target is verified writable. So a mode never expires into an unsafe state because Redis
 * is down, an instance restarted from its state file, or Redis came back empty.
 */
export function readOnlyActive(state: DrState, _now?: number): boolean {
  return state.readOnly.enabled;
}

/**
 * Changes after which a write admitted earlier must not commit: read-only mode, the database part,
 * the media backend (an upload admitted before a media switch stores its content on the old
 * backend: it finishes before the switch answers, or fails). They raise the write barrier on every
 * instance and the database write fence.
 */
export function writeRelevantChange(next: DrState, previous: DrState): boolean {
  return (
    JSON.stringify(next.readOnly) !== JSON.stringify(previous.readOnly) ||
    JSON.stringify(next.database) !== JSON.stringify(previous.database) ||
    next.media.active !== previous.media.active
  );
}
