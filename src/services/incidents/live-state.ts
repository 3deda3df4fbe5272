// What incidents and the status page read from health: a narrow snapshot, never error messages.
import type { Registry } from 'prom-client';
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

/** The backup capability's metric: the time of the last good backup, by type. */
export const BACKUP_SUCCESS_METRIC = 'sav3_backup_last_success_timestamp_seconds';

/**
 * Age of the newest good full or differential backup, from the metric the backup capability
 * exports on this registry: undefined when nothing reports backups here (the rule does not
 * apply), null when they are reported but none succeeded.
 */
export async function backupAgeSeconds(registry: Registry, now = Date.now()): Promise<number | null | undefined> {
  const metric = registry.getSingleMetric(BACKUP_SUCCESS_METRIC);
  if (!metric) return undefined;
  const { values } = await metric.get();
  const base = values.filter((v) => v.labels.type === 'full' || v.labels.type === 'diff');
  if (base.length === 0) return undefined;
  const newest = Math.max(...base.map((v) => v.value));
  return newest > 0 ? Math.max(0, Math.round(now / 1000 - newest)) : null;
}
