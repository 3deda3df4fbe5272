import { randomUUID } from 'node:crypto';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { Component, Incident, IncidentStatus, Role, Severity, TimelineEntry, TimelineKind, Visibility } from './incident-model.ts';
import type { OutboxMessage } from './notification-outbox.ts';
import { SEVERITIES as SEVERITY_ORDER } from './incident-model.ts';
import { redactDeep, redactSecrets } from '../redact-secrets.ts';
import { enqueueInTx } from './notification-outbox.ts';

type Row = Awaited<ReturnType<PrismaClient['incident']['findFirstOrThrow']>>;
type UpdateRow = Awaited<ReturnType<PrismaClient['incidentUpdate']['findFirstOrThrow']>>;

export interface NewIncident {
  severity: Severity;
  title: string;
  summary: string;
  components: Component[];
  source: Incident['source'];
  createdBy: string;
  startedAt: Date;
  detectedAt: Date;
  acknowledgedAt: Date | null;
  acknowledgedBy: string | null;
  nextUpdateDueAt: Date | null;
  alertGroupKey?: string;
  roles?: Partial<Record<Role, string>>;
}

export interface NewEntry {
  at: Date;
  kind: TimelineKind;
  visibility: Visibility;
  status?: IncidentStatus | null;
  message: string;
  author: string;
  detail?: unknown;
  durationMs?: number | null;
  dedupeKey?: string;
}

export type IncidentPatch = Partial<
  Pick<Row, 'status' | 'severity' | 'acknowledgedAt' | 'acknowledgedBy' | 'mitigatedAt' | 'resolvedAt' | 'nextUpdateDueAt' | 'rootCause'>
> & {
  roles?: Partial<Record<Role, string>>;
};

export class IncidentConflict extends Error {}

/** A resolved alert (one alert instance: fingerprint and startsAt as sent), kept whatever the order of delivery. */
export interface AlertResolution {
  fingerprint: string;
  startsAt: string;
  endsAt: Date;
  groupKey: string;
  alertname: string;
  detail: unknown;
}

/** How long resolutions are kept for late firing notifications (Alertmanager retries for minutes, not weeks). */
const RESOLUTION_KEEP_MS = 30 * 86_400_000;

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function toIncident(r: Row): Incident {
  return {
    id: r.id,
    severity: r.severity as Severity,
    // Redacted on the way in, and again on the way out (rows written before a rule existed).
    title: redactSecrets(r.title),
    summary: redactSecrets(r.summary),
    components: r.components as Component[],
    status: r.status as IncidentStatus,
    source: r.source as Incident['source'],
    createdBy: r.createdBy,
    roles: (r.roles ?? {}) as Incident['roles'],
    rootCause: r.rootCause === null ? null : redactSecrets(r.rootCause),
    startedAt: r.startedAt.toISOString(),
    detectedAt: r.detectedAt.toISOString(),
    acknowledgedAt: iso(r.acknowledgedAt),
    acknowledgedBy: r.acknowledgedBy,
    mitigatedAt: iso(r.mitigatedAt),
    resolvedAt: iso(r.resolvedAt),
    nextUpdateDueAt: iso(r.nextUpdateDueAt),
  };
}

function toEntry(u: UpdateRow): TimelineEntry {
  return {
    id: u.id,
    at: u.at.toISOString(),
    kind: u.kind as TimelineKind,
    visibility: u.visibility as Visibility,
    status: u.status as IncidentStatus | null,
    message: redactSecrets(u.message),
    author: u.author,
    detail: u.detail === null ? null : redactDeep(u.detail),
    durationMs: u.durationMs,
  };
}

function entryData(incidentId: string, e: NewEntry) {
  return {
    id: randomUUID(),
    incidentId,
    at: e.at,
    kind: e.kind,
    visibility: e.visibility,
    status: e.status ?? null,
    // Alert annotations and operators' texts may carry credentials: never stored or shown.
    message: redactSecrets(e.message),
    author: e.author,
    detail: e.detail === undefined || e.detail === null ? undefined : (redactDeep(e.detail) as object),
    durationMs: e.durationMs ?? null,
    dedupeKey: e.dedupeKey ?? null,
  };
}

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; meta?: { driverAdapterError?: { cause?: { originalCode?: string } } }; message?: string };
  return e?.code === 'P2002' || e?.meta?.driverAdapterError?.cause?.originalCode === '23505' || /unique constraint/i.test(e?.message ?? '');
}

/**
 * Incidents, their timelines and the notifications they cause, in PostgreSQL. Each change and the
 * notifications it owes are written in one transaction: a notification is never lost to a crash
 * between the two.
 */
export class IncidentStore {
  constructor(private readonly prisma: () => PrismaClient) {}

  /** Creates an incident with id INC-YYYYMMDD-N (N counts that UTC day) and its first entries. */
  async create(input: NewIncident, entries: NewEntry[], notify: (incident: Incident) => OutboxMessage[]): Promise<Incident> {
    try {
      return await this.prisma().$transaction(async (tx) => {
        const day = input.detectedAt.toISOString().slice(0, 10).replaceAll('-', '');
        const counter = await tx.$queryRaw<{ last: number }[]>`
          INSERT INTO incident_day_counters (day, last) VALUES (${day}, 1)
          ON CONFLICT (day) DO UPDATE SET last = incident_day_counters.last + 1 RETURNING last`;
        const last = counter[0]!.last;
        const { roles, ...rest } = input;
        // Every free text is stored redacted, whoever wrote it (an operator, an alert).
        const row = await tx.incident.create({
          data: {
            ...rest,
            title: redactSecrets(rest.title),
            summary: redactSecrets(rest.summary),
            id: `INC-${day}-${last}`,
            status: 'investigating',
            roles: roles ?? {},
          },
        });
        await tx.incidentUpdate.createMany({ data: entries.map((e) => entryData(row.id, e)) });
        const incident = toIncident(row);
        await enqueueInTx(tx, notify(incident));
        return incident;
      });
    } catch (err) {
      if (input.alertGroupKey !== undefined && isUniqueViolation(err))
        throw new IncidentConflict('an incident for this alert group is already open');
      throw err;
    }
  }

  async get(id: string): Promise<Incident | undefined> {
    const row = await this.prisma().incident.findUnique({ where: { id } });
    return row ? toIncident(row) : undefined;
  }

  async timeline(id: string, visibility?: Visibility): Promise<TimelineEntry[]> {
    const rows = await this.prisma().incidentUpdate.findMany({
      where: { incidentId: id, ...(visibility ? { visibility } : {}) },
      orderBy: [{ at: 'asc' }, { id: 'asc' }],
    });
    return rows.map(toEntry);
  }

  async list(status?: IncidentStatus | 'open', limit = 100): Promise<Incident[]> {
    const where = status === 'open' ? { status: { not: 'resolved' } } : status ? { status } : {};
    const rows = await this.prisma().incident.findMany({ where, orderBy: [{ detectedAt: 'desc' }, { id: 'desc' }], take: limit });
    return rows.map(toIncident);
  }

  /**
   * Open incidents for the status page: every P0 and P1 (never bounded: the page must not hide
   * one), at most `perSeverity` of each lower severity with the count of the rest; worst severity
   * first, then newest first.
   */
  async openBySeverity(perSeverity: number): Promise<{ incidents: Incident[]; more: { severity: Severity; count: number }[] }> {
    const prisma = this.prisma();
    const open = { status: { not: 'resolved' } };
    const order = [{ detectedAt: 'desc' as const }, { id: 'desc' as const }];
    const [critical, counts, ...lower] = await Promise.all([
      prisma.incident.findMany({ where: { ...open, severity: { in: ['P0', 'P1'] } }, orderBy: order }),
      prisma.incident.groupBy({ by: ['severity'], where: open, _count: { _all: true } }),
      ...(['P2', 'P3'] as const).map((severity) =>
        prisma.incident.findMany({ where: { ...open, severity }, orderBy: order, take: perSeverity }),
      ),
    ]);
    const rank = (s: string) => SEVERITY_ORDER.indexOf(s as Severity);
    const incidents = [...critical, ...lower.flat()]
      .sort((a, b) => rank(a.severity) - rank(b.severity) || b.detectedAt.getTime() - a.detectedAt.getTime() || (a.id < b.id ? 1 : -1))
      .map(toIncident);
    const more = SEVERITY_ORDER.flatMap((severity) => {
      const total = counts.find((c) => c.severity === severity)?._count._all ?? 0;
      const shown = incidents.filter((i) => i.severity === severity).length;
      return total > shown ? [{ severity, count: total - shown }] : [];
    });
    return { incidents, more };
  }

  /** The public entries of several incidents in one read, oldest first per incident. */
  async publicTimelines(ids: string[]): Promise<Map<string, TimelineEntry[]>> {
    const out = new Map<string, TimelineEntry[]>(ids.map((id) => [id, []]));
    if (ids.length === 0) return out;
    const rows = await this.prisma().incidentUpdate.findMany({
      where: { incidentId: { in: ids }, visibility: 'public' },
      orderBy: [{ at: 'asc' }, { id: 'asc' }],
    });
    for (const r of rows) out.get(r.incidentId)?.push(toEntry(r));
    return out;
  }

  /**
   * Per severity: how many incidents are open and when the oldest unacknowledged one was detected
   * (counted by PostgreSQL, whatever their number).
   */
  async openCounts(): Promise<Map<Severity, { open: number; oldestUnacknowledged: Date | null }>> {
    const prisma = this.prisma();
    const open = { status: { not: 'resolved' } };
    const [counts, unacked] = await Promise.all([
      prisma.incident.groupBy({ by: ['severity'], where: open, _count: { _all: true } }),
      prisma.incident.groupBy({ by: ['severity'], where: { ...open, acknowledgedAt: null }, _min: { detectedAt: true } }),
    ]);
    return new Map(
      SEVERITY_ORDER.map((s) => [
        s,
        {
          open: counts.find((c) => c.severity === s)?._count._all ?? 0,
          oldestUnacknowledged: unacked.find((c) => c.severity === s)?._min.detectedAt ?? null,
        },
      ]),
    );
  }

  async openForAlertGroup(groupKey: string): Promise<Incident | undefined> {
    // Through the unique index on md5(alert_group_key) (a group key may be too long for a btree).
    const [hit] = await this.prisma().$queryRaw<{ id: string }[]>`
      SELECT id FROM incidents
      WHERE md5(alert_group_key) = md5(${groupKey}) AND alert_group_key = ${groupKey} AND status <> 'resolved'
      LIMIT 1`;
    if (!hit) return undefined;
    const row = await this.prisma().incident.findFirst({ where: { id: hit.id, status: { not: 'resolved' } } });
    return row ? toIncident(row) : undefined;
  }

  /** The incident whose timeline already holds the entry with this dedupe key, if any. */
  async incidentWithEntry(dedupeKey: string): Promise<Incident | undefined> {
    const entry = await this.prisma().incidentUpdate.findUnique({ where: { dedupeKey }, include: { incident: true } });
    return entry ? toIncident(entry.incident) : undefined;
  }

  /** Records a resolved alert (once per alert instance); forgets those older than 30 days. */
  async recordResolution(r: AlertResolution, now: Date): Promise<void> {
    await this.prisma().alertResolution.createMany({
      data: [{ ...r, detail: r.detail === undefined || r.detail === null ? undefined : (r.detail as object) }],
      skipDuplicates: true,
    });
    await this.prisma().alertResolution.deleteMany({ where: { receivedAt: { lt: new Date(now.getTime() - RESOLUTION_KEEP_MS) } } });
  }

  /**
   * The recorded resolution that ends this alert instance: the same fingerprint and startsAt, or the
   * same fingerprint ended at or after `startsAt` (the firing notification is older than its resolution).
   */
  async resolutionOf(fingerprint: string, startsAtRaw: string, startsAt: Date): Promise<AlertResolution | undefined> {
    const row = await this.prisma().alertResolution.findFirst({
      where: { fingerprint, OR: [{ startsAt: startsAtRaw }, { endsAt: { gte: startsAt } }] },
      orderBy: { endsAt: 'desc' },
    });
    return row ? { ...row, detail: row.detail ?? null } : undefined;
  }

  /** Incidents open at `at` (started before it, not resolved before it). */
  async openAt(at: Date): Promise<Incident[]> {
    const rows = await this.prisma().incident.findMany({
      where: { startedAt: { lte: at }, OR: [{ resolvedAt: null }, { resolvedAt: { gte: at } }] },
    });
    return rows.map(toIncident);
  }

  /**
   * Applies `patch` only if the incident is still in `expectedStatus` (compare-and-set, so two
   * operators racing a transition cannot both win), with its timeline entries and notifications.
   */
  async change(
    id: string,
    expectedStatus: IncidentStatus,
    patch: IncidentPatch,
    entries: NewEntry[],
    notify: (incident: Incident) => OutboxMessage[],
  ): Promise<Incident> {
    return this.prisma().$transaction(async (tx) => {
      const data = { ...patch, ...(typeof patch.rootCause === 'string' ? { rootCause: redactSecrets(patch.rootCause) } : {}) };
      const { count } = await tx.incident.updateMany({ where: { id, status: expectedStatus }, data });
      if (count === 0) throw new IncidentConflict('the incident changed meanwhile');
      const incident = toIncident(await tx.incident.findUniqueOrThrow({ where: { id } }));
      await tx.incidentUpdate.createMany({ data: entries.map((e) => entryData(id, e)) });
      await enqueueInTx(tx, notify(incident));
      return incident;
    });
  }

  /** Adds entries whose dedupe keys were not seen before; returns how many were new. */
  async addEntries(id: string, entries: NewEntry[]): Promise<number> {
    const { count } = await this.prisma().incidentUpdate.createMany({ data: entries.map((e) => entryData(id, e)), skipDuplicates: true });
    return count;
  }

  /** For the reminders: open incidents whose next public update is overdue. */
  async overdue(now: Date, severities: Severity[]): Promise<Incident[]> {
    const rows = await this.prisma().incident.findMany({
      where: { status: { not: 'resolved' }, severity: { in: severities }, nextUpdateDueAt: { lte: now } },
    });
    return rows.map(toIncident);
  }

  async enqueue(messages: OutboxMessage[]): Promise<void> {
    await this.prisma().$transaction((tx) => enqueueInTx(tx, messages));
  }
}
