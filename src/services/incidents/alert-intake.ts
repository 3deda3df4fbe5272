import { createHash } from 'node:crypto';
import { ConflictError } from '../../http/app-error.ts';
import { alertFingerprint, cleanAlert, componentsOf, type IncomingAlert } from './alertmanager-alert.ts';
import type { EventHub } from './event-hub.ts';
import { alertTimes, severityFromLabel, type Component, type Incident, type Severity } from './incident-model.ts';
import type { IncidentService } from './incident-service.ts';
import { IncidentConflict, type AlertResolution, type IncidentStore, type NewEntry } from './incident-store.ts';
import { renderInitial } from './notification-templates.ts';

/** What one alert of a notification did (the webhook's answer counts these). */
export interface AlertOutcome {
  /** The incident the alert is on, if any. */
  incidentId?: string;
  outcome: 'opened' | 'joined' | 'duplicate' | 'already_resolved' | 'resolved';
  /** Its times were out of bounds and were clamped. */
  clamped: boolean;
}

export interface AlertFacts {
  title: string;
  summary: string;
  severity: Severity;
  components: Component[];
}

/**
 * Alerts into incidents. Invariants: at most one open incident per alert group (a partial unique
 * index, whatever races between retries and instances); an alert (fingerprint and start) joins a
 * timeline once; an alert already handled by an incident since resolved reopens nothing.
 */
export class AlertIntake {
  constructor(private readonly deps: { store: IncidentStore; hub: EventHub; incidents: IncidentService }) {}

  /**
   * One alert of an Alertmanager notification for `groupKey`: a firing alert opens or joins its
   * group's incident, a resolved one records its resolution and joins the open incident.
   */
  async handle(raw: IncomingAlert, groupKey: string, receivedAt: Date): Promise<AlertOutcome> {
    const a = cleanAlert(raw);
    // An alert's entries are deduplicated per group: the same alert routed into two groups
    // (two routes with different group_by) belongs to each group's incident.
    const group = createHash('sha256').update(groupKey).digest('hex').slice(0, 16);
    const name = a.labels.alertname ?? '';
    const fp = alertFingerprint(a);
    const times = alertTimes(a, receivedAt);
    const clamped = times.notes.length > 0;
    const detail = {
      labels: a.labels,
      annotations: a.annotations,
      fingerprint: fp,
      startsAt: a.startsAt,
      endsAt: a.endsAt ?? null,
      ...(times.notes.length > 0 ? { clamped: times.notes } : {}),
    };
    const recovery = (endsAt: Date, d: unknown): NewEntry => ({
      at: endsAt,
      kind: 'alert',
      visibility: 'public',
      message: `Monitoring reports that ${name} has recovered.`,
      author: 'alertmanager',
      detail: d,
      dedupeKey: `alert:${group}:${fp}:${a.startsAt}:resolved`,
    });
    if (a.status === 'firing') {
      const severity = severityFromLabel(a.labels.severity);
      // Its resolution may have been delivered first (or alone): then this opens nothing.
      const resolution = await this.resolutionOf(fp, a.startsAt, times.startsAt);
      const out = await this.openOrJoin(
        groupKey,
        {
          title: `Alert: ${name}`.slice(0, 200),
          summary: `Monitoring detected a problem (${name}); we are investigating.`,
          severity,
          components: componentsOf(a),
        },
        {
          at: times.startsAt,
          kind: 'alert',
          visibility: 'internal',
          message: `firing: ${name} (${severity})${a.annotations.summary ? `: ${a.annotations.summary}` : ''}${times.notes.length > 0 ? ` [${times.notes.join('; ')}]` : ''}`,
          author: 'alertmanager',
          detail,
          dedupeKey: `alert:${group}:${fp}:${a.startsAt}:firing`,
        },
        resolution ? recovery(resolution.endsAt, resolution.detail) : undefined,
        // Keys written before they named the group (this alert's entry from an earlier release).
        `alert:${fp}:${a.startsAt}:firing`,
      );
      const outcome = out.opened ? 'opened' : out.added ? 'joined' : !out.incident ? 'already_resolved' : 'duplicate';
      return { ...(out.incident ? { incidentId: out.incident.id } : {}), outcome, clamped };
    }
    const endsAt = times.endsAt ?? receivedAt;
    const incident = await this.resolve(
      { fingerprint: fp, startsAt: a.startsAt, endsAt, groupKey, alertname: name, detail },
      recovery(endsAt, detail),
      `alert:${fp}:${a.startsAt}:resolved`,
    );
    return { ...(incident ? { incidentId: incident.id } : {}), outcome: 'resolved', clamped };
  }

  /** The recorded resolution that ends this alert instance, if its resolution was delivered first. */
  resolutionOf(fingerprint: string, startsAtRaw: string, startsAt: Date): Promise<AlertResolution | undefined> {
    return this.deps.store.resolutionOf(fingerprint, startsAtRaw, startsAt);
  }

  /**
   * A firing alert opens an incident for its group or joins the open one. `resolved` is the
   * recovery entry of this very alert when its resolution arrived first: then it only joins an open
   * incident (with its recovery, as if delivered in order) and never opens one.
   */
  async openOrJoin(
    groupKey: string,
    alert: AlertFacts,
    entry: NewEntry,
    resolved?: NewEntry,
    /** The entry's dedupe key as written before keys named the group: recognised, never written. */
    legacyKey?: string,
  ): Promise<{ incident: Incident | undefined; opened: boolean; added: boolean }> {
    const { store, hub, incidents } = this.deps;
    const legacy = legacyKey ? await store.incidentWithEntry(legacyKey) : undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      const open = await store.openForAlertGroup(groupKey);
      if (open) {
        // Already on this incident's timeline under its old key: a re-send.
        if (legacy?.id === open.id) return { incident: open, opened: false, added: false };
        const added = (await store.addEntries(open.id, resolved ? [entry, resolved] : [entry])) > 0;
        let incident = open;
        if (added) {
          incident = await incidents.raiseSeverity(open, alert.severity, entry.at, alert.title).catch(() => open);
          hub.publish('incident.timeline', { alert: alert.title }, open.id);
        }
        return { incident, opened: false, added };
      }
      // This very alert was handled before by an incident since resolved: a re-send of a
      // still-firing alert must not reopen what people closed.
      const handled = (entry.dedupeKey ? await store.incidentWithEntry(entry.dedupeKey) : undefined) ?? legacy;
      if (handled) return { incident: handled, opened: false, added: false };
      // Already over before this notification arrived: nothing to open.
      if (resolved) return { incident: undefined, opened: false, added: false };
      const now = incidents.now();
      try {
        const incident = await store.create(
          {
            severity: alert.severity,
            title: alert.title,
            summary: alert.summary,
            components: alert.components,
            source: 'alertmanager',
            createdBy: 'alertmanager',
            startedAt: entry.at.getTime() < now.getTime() ? entry.at : now,
            detectedAt: now,
            acknowledgedAt: null,
            acknowledgedBy: null,
            nextUpdateDueAt: incidents.nextDue(alert.severity, now),
            alertGroupKey: groupKey,
          },
          [
            { at: now, kind: 'opened', visibility: 'public', status: 'investigating', message: alert.summary, author: 'alertmanager' },
            entry,
          ],
          incidents.notify('initial', 'initial', (i) => renderInitial(i)),
        );
        hub.publish('incident.opened', incident, incident.id);
        return { incident, opened: true, added: true };
      } catch (err) {
        // Another delivery (a retry, another instance) opened it first: join that one.
        if (!(err instanceof IncidentConflict)) throw err;
      }
    }
    throw new ConflictError('the alert group changed repeatedly; Alertmanager will retry');
  }

  /**
   * A resolved alert is recorded (so a firing notification delivered after it opens nothing) and
   * adds its entry to the open incident of its group, if there is one.
   */
  async resolve(resolution: AlertResolution, entry: NewEntry, legacyKey?: string): Promise<Incident | undefined> {
    await this.deps.store.recordResolution(resolution, this.deps.incidents.now());
    const open = await this.deps.store.openForAlertGroup(resolution.groupKey);
    if (!open) return undefined;
    // Already on this incident's timeline under its old key (before keys named the group): a re-send.
    if (legacyKey && (await this.deps.store.incidentWithEntry(legacyKey))?.id === open.id) return open;
    if ((await this.deps.store.addEntries(open.id, [entry])) > 0)
      this.deps.hub.publish('incident.timeline', { message: entry.message }, open.id);
    return open;
  }
}
