// The runbook's incident response as data: severities and their response targets, states and the
// transitions between them, the response roles, the components the status page shows.

export const SEVERITIES = ['P0', 'P1', 'P2', 'P3'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** Runbook "Incident Classification": the response time per severity. */
export const RESPONSE_TARGET_SECONDS: Record<Severity, number> = { P0: 15 * 60, P1: 60 * 60, P2: 4 * 3600, P3: 24 * 3600 };

/** How often the public hears from an open incident (the initial template: "updates every 15 minutes" for P0). */
export const UPDATE_INTERVAL_SECONDS: Record<Severity, number> = { P0: 15 * 60, P1: 30 * 60, P2: 2 * 3600, P3: 24 * 3600 };

export const STATUSES = ['investigating', 'identified', 'monitoring', 'resolved'] as const;
export type IncidentStatus = (typeof STATUSES)[number];

/**
 * Allowed moves: forward, or back while not resolved (a fix that did not hold). Resolved is final:
 * a recurrence is a new incident, so the resolved record and its downtime stay true.
 */
const TRANSITIONS: Record<IncidentStatus, readonly IncidentStatus[]> = {
  investigating: ['identified', 'monitoring', 'resolved'],
  identified: ['investigating', 'monitoring', 'resolved'],
  monitoring: ['investigating', 'identified', 'resolved'],
  resolved: [],
};

export function canTransition(from: IncidentStatus, to: IncidentStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Runbook "Response Team" roles, each assigned to an admin token name. */
export const ROLES = ['incident_commander', 'database_administrator', 'infrastructure_engineer', 'communications_lead'] as const;
export type Role = (typeof ROLES)[number];
export const ROLE_TITLES: Record<Role, string> = {
  incident_commander: 'Incident Commander',
  database_administrator: 'Database Administrator',
  infrastructure_engineer: 'Infrastructure Engineer',
  communications_lead: 'Communications Lead',
};

export const COMPONENTS = ['api', 'database', 'media-uploads', 'media-downloads'] as const;
export type Component = (typeof COMPONENTS)[number];
export const COMPONENT_NAMES: Record<Component, string> = {
  api: 'API',
  database: 'Database',
  'media-uploads': 'Media uploads',
  'media-downloads': 'Media downloads',
};

/** Runbook RTO/RPO targets, by the component family a DR action recovers. */
export const RECOVERY_TARGETS = {
  database: { rtoSeconds: 15 * 60, rpoSeconds: 5 * 60 },
  media: { rtoSeconds: 30 * 60, rpoSeconds: 3600 },
} as const;

export type Visibility = 'public' | 'internal';
export type TimelineKind = 'opened' | 'update' | 'status' | 'acknowledged' | 'roles' | 'dr_action' | 'alert' | 'severity';

export interface TimelineEntry {
  id: string;
  at: string;
  kind: TimelineKind;
  visibility: Visibility;
  status: IncidentStatus | null;
  message: string;
  author: string;
  detail: unknown;
  durationMs: number | null;
}

export interface Incident {
  id: string;
  severity: Severity;
  title: string;
  summary: string;
  components: Component[];
  status: IncidentStatus;
  source: 'manual' | 'alertmanager';
  createdBy: string;
  roles: Partial<Record<Role, string>>;
  rootCause: string | null;
  startedAt: string;
  detectedAt: string;
  acknowledgedAt: string | null;
  acknowledgedBy: string | null;
  mitigatedAt: string | null;
  resolvedAt: string | null;
  nextUpdateDueAt: string | null;
}

/** The response-target view of an incident: how long acknowledgement took (or has taken so far). */
export function responseFacts(incident: Incident, now: number) {
  const target = RESPONSE_TARGET_SECONDS[incident.severity];
  const detected = Date.parse(incident.detectedAt);
  const acked = incident.acknowledgedAt ? Date.parse(incident.acknowledgedAt) : null;
  const seconds = Math.max(0, Math.round(((acked ?? now) - detected) / 1000));
  return {
    responseTargetSeconds: target,
    acknowledgementSeconds: acked === null ? null : seconds,
    unacknowledgedSeconds: acked === null && incident.status !== 'resolved' ? seconds : null,
    responseTargetMet: acked === null ? (seconds > target ? false : null) : seconds <= target,
  };
}

/** Alertmanager's `severity` label to a runbook severity (P0–P3 taken as they are). */
export function severityFromLabel(label: string | undefined): Severity {
  const value = (label ?? '').trim().toLowerCase();
  const direct = SEVERITIES.find((s) => s.toLowerCase() === value);
  if (direct) return direct;
  if (value === 'critical' || value === 'page') return 'P0';
  if (value === 'high' || value === 'error' || value === 'major') return 'P1';
  if (value === 'warning' || value === 'medium' || value === 'minor') return 'P2';
  return 'P3';
}

export function worse(a: Severity, b: Severity): Severity {
  return SEVERITIES.indexOf(a) <= SEVERITIES.indexOf(b) ? a : b;
}

export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

/** No alert of this service started before this: an earlier time is a broken clock or a zero value. */
export const ALERT_EPOCH_MS = Date.parse('2000-01-01T00:00:00Z');
/** How far ahead of this server's clock an alert time may lie (clock skew between hosts). */
export const ALERT_MAX_AHEAD_MS = 5 * 60_000;

/**
 * An alert's start and end within sane bounds. Alertmanager sends the zero time
 * `0001-01-01T00:00:00Z` as the end of a firing alert: no end, not an error. A start (or a
 * resolved alert's end) before 2000-01-01, more than 5 minutes ahead, or unreadable is replaced by
 * the time the notification was received, with a note (the payload is still taken: refusing it
 * would lose the whole group, as Alertmanager does not retry a 400). An end before the start is the start.
 */
export function alertTimes(
  alert: { status: 'firing' | 'resolved'; startsAt: string; endsAt?: string },
  receivedAt: Date,
): { startsAt: Date; endsAt: Date | null; notes: string[] } {
  const notes: string[] = [];
  const latest = receivedAt.getTime() + ALERT_MAX_AHEAD_MS;
  const inBounds = (t: number) => Number.isFinite(t) && t >= ALERT_EPOCH_MS && t <= latest;
  let start = Date.parse(alert.startsAt);
  if (!inBounds(start)) {
    notes.push(`startsAt ${alert.startsAt.slice(0, 40)} is out of bounds: the receipt time is used`);
    start = receivedAt.getTime();
  }
  if (alert.status === 'firing') return { startsAt: new Date(start), endsAt: null, notes };
  const raw = alert.endsAt ?? '';
  let end = Date.parse(raw);
  // Absent or the zero time: the end is when the resolution arrived.
  if (raw === '' || (Number.isFinite(end) && end < Date.parse('0002-01-01T00:00:00Z'))) end = receivedAt.getTime();
  else if (!inBounds(end)) {
    notes.push(`endsAt ${raw.slice(0, 40)} is out of bounds: the receipt time is used`);
    end = receivedAt.getTime();
  }
  if (end < start) {
    notes.push('endsAt is before startsAt: startsAt is used');
    end = start;
  }
  return { startsAt: new Date(start), endsAt: new Date(end), notes };
}
