// The runbook's communication templates (initial, resolution) and an update and a reminder in the
// same voice, rendered with the incident's real values. Output is plain text for a webhook `text`.
import {
  COMPONENT_NAMES,
  formatDuration,
  ROLE_TITLES,
  ROLES,
  UPDATE_INTERVAL_SECONDS,
  type Component,
  type Incident,
} from './incident-model.ts';
import { oneLine } from './incident-text.ts';

export type NotificationKind = 'initial' | 'update' | 'resolution' | 'reminder';

const IMPACT: Record<Component, string> = {
  api: 'the API may be unreachable or slow',
  database: 'users may experience login failures and data access issues',
  'media-uploads': 'uploads may fail',
  'media-downloads': 'media may fail to load',
};

export function impactOf(incident: Pick<Incident, 'components'>): string {
  if (incident.components.length === 0) return 'under assessment';
  const text = incident.components.map((c) => IMPACT[c]).join('; ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function team(incident: Incident): string {
  const members = ROLES.filter((r) => incident.roles[r]).map((r) => `${ROLE_TITLES[r]}: ${incident.roles[r]}`);
  return members.length > 0 ? members.join(', ') : 'being assembled';
}

function affected(incident: Incident): string {
  return incident.components.map((c) => COMPONENT_NAMES[c]).join(', ') || 'none named';
}

export function renderInitial(incident: Incident, eta?: string): string {
  return [
    `Subject: [${incident.severity}] SAV3 System Incident - ${oneLine(incident.title)}`,
    '',
    `We are currently investigating ${incident.summary.replace(/\.$/, '')}, affecting the SAV3 platform.`,
    '',
    `Impact: ${impactOf(incident)}`,
    `Affected: ${affected(incident)}`,
    `Start Time: ${incident.startedAt}`,
    `ETA: ${eta !== undefined ? oneLine(eta) : `Investigating (updates every ${intervalText(incident)})`}`,
    '',
    `Response Team: ${team(incident)}`,
    `Incident ID: ${incident.id}`,
    '',
    `Next update: ${incident.nextUpdateDueAt ?? 'when there is news'}`,
  ].join('\n');
}

export function renderUpdate(incident: Incident, message: string, eta?: string): string {
  return [
    `Subject: [${incident.severity}] [UPDATE] SAV3 System Incident - ${oneLine(incident.title)}`,
    '',
    `Status: ${incident.status}`,
    message,
    '',
    `Impact: ${impactOf(incident)}`,
    `Start Time: ${incident.startedAt}`,
    ...(eta ? [`ETA: ${oneLine(eta)}`] : []),
    '',
    `Incident ID: ${incident.id}`,
    '',
    `Next update: ${incident.nextUpdateDueAt ?? 'when there is news'}`,
  ].join('\n');
}

export function renderResolution(incident: Incident, resolution: string): string {
  const downtime = incident.resolvedAt ? formatDuration(Date.parse(incident.resolvedAt) - Date.parse(incident.startedAt)) : 'unknown';
  return [
    `Subject: [RESOLVED] SAV3 System Incident - ${oneLine(incident.title)}`,
    '',
    `The incident "${oneLine(incident.title)}" affecting the SAV3 platform has been resolved.`,
    '',
    `Resolution: ${resolution}`,
    `Total Downtime: ${downtime}`,
    `Root Cause: ${incident.rootCause ?? 'under investigation; see the post-mortem'}`,
    '',
    'All services are now fully operational. A detailed post-mortem will be published within 48 hours.',
    '',
    `Incident ID: ${incident.id}`,
  ].join('\n');
}

export function renderReminder(incident: Incident): string {
  return [
    `Subject: [${incident.severity}] [REMINDER] SAV3 System Incident - ${oneLine(incident.title)}`,
    '',
    `The next public update for ${incident.id} was due at ${incident.nextUpdateDueAt}.`,
    `Status: ${incident.status}; Response Team: ${team(incident)}.`,
    `Post an update: POST /admin/incidents/${incident.id}/updates`,
  ].join('\n');
}

function intervalText(incident: Incident): string {
  return formatDuration(UPDATE_INTERVAL_SECONDS[incident.severity] * 1000);
}
