import type { DatabaseTarget, MediaBackendName } from '../config/config.ts';

export interface ReadOnlyState {
  enabled: boolean;
  reason: string | null;
  since: string | null;
  by: string | null;
  expiresAt: string | null;
}

export interface TargetState<T extends string> {
  active: T;
  since: string | null;
  by: string | null;
}

/** The one versioned document every instance follows. */
export interface DrState {
  version: number;
  readOnly: ReadOnlyState;
  database: TargetState<DatabaseTarget>;
  media: TargetState<MediaBackendName>;
  updatedAt: string | null;
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
}

/** Read-only mode as it holds at `now`: an expired mode is off even before anyone records it. */
export function readOnlyActive(state: DrState, now: number): boolean {
  const { enabled, expiresAt } = state.readOnly;
  return enabled && (expiresAt === null || Date.parse(expiresAt) > now);
}
