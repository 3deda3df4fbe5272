import { ConflictError } from '../../http/app-error.ts';
import type { EventHub } from './event-hub.ts';
import type { Component, Incident, Severity } from './incident-model.ts';
import type { IncidentService } from './incident-service.ts';
import { IncidentConflict, type AlertResolution, type IncidentStore, type NewEntry } from './incident-store.ts';
import { renderInitial } from './notification-templates.ts';

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
