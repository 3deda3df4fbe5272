// What incidents and the status page read from health: a narrow snapshot, never error messages.
import type { Component } from './incident-model.ts';

export type ComponentState = 'operational' | 'degraded' | 'outage' | 'unknown';

interface Part {
  status: 'healthy' | 'degraded' | 'unhealthy';
  error?: { code: string };
  [extra: string]: unknown;
}

/** The shape of HealthService.overall(false): statuses and error codes only. */
export interface HealthSnapshot {
  status: 'healthy' | 'degraded' | 'unhealthy';
  components: { database: Part; media: Part; redis: Part };
  readOnly: boolean;
}

export interface LiveFacts {
  health: HealthSnapshot;
  /** Whether a media backend other than the active one answers (downloads can still be found). */
  otherMediaUp: boolean;
  replicaConfigured: boolean;
  /** Age of the newest good backup in seconds, when a backup capability reports one. */
  backupAgeSeconds?: number | null;
  backupMaxAgeSeconds?: number;
}

/** The status page's components, from health: the state a user of each would notice. */
export function componentStates(f: LiveFacts): Record<Component, ComponentState> {
  const { database, media } = f.health.components;
  const dbDown = database.status === 'unhealthy';
  const mediaDown = media.status === 'unhealthy';
  return {
    // This instance answers; without the database most API calls fail, reads may still work.
    api: dbDown ? (f.health.readOnly ? 'degraded' : 'outage') : 'operational',
    database: dbDown ? 'outage' : database.status === 'degraded' ? 'degraded' : 'operational',
    'media-uploads': dbDown || mediaDown ? 'outage' : f.health.readOnly ? 'outage' : 'operational',
    'media-downloads': mediaDown ? (f.otherMediaUp ? 'degraded' : 'outage') : dbDown ? 'degraded' : 'operational',
  };
}
