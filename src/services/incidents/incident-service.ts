import { BadRequestError, ConflictError, NotFoundError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { EventHub } from './event-hub.ts';
import {
  ALERT_EPOCH_MS,
  canTransition,
  ROLE_TITLES,
  UPDATE_INTERVAL_SECONDS,
  worse,
  type Component,
  type Incident,
  type IncidentStatus,
  type Role,
  type Severity,
  type Visibility,
} from './incident-model.ts';
import { IncidentConflict, type IncidentPatch, type IncidentStore, type NewEntry } from './incident-store.ts';
import { fanOut, type OutboxMessage, type Receiver } from './notification-outbox.ts';
import { renderInitial, renderReminder, renderResolution, renderUpdate, type NotificationKind } from './notification-templates.ts';
import { chatEscape, cleanText } from './incident-text.ts';
import { redactSecrets } from '../redact-secrets.ts';

export interface CreateInput {
  severity: Severity;
  title: string;
  summary: string;
  components: Component[];
  eta?: string;
  startedAt?: string;
  roles?: Partial<Record<Role, string>>;
}

export interface UpdateInput {
  message: string;
  visibility: Visibility;
  status?: IncidentStatus;
  eta?: string;
  rootCause?: string;
}

export interface IncidentServiceDeps {
  incidentStore: IncidentStore;
  receivers: readonly Receiver[];
  hub: EventHub;
  /** Admin token names, the only names roles can be assigned to. */
  tokenNames: readonly string[];
  logger: Logger;
  now?: () => number;
}

/**
 * The incident lifecycle of the runbook: open (by an operator or an alert), acknowledge, assign
 * roles, post public or internal updates, move through the states, resolve. Every public change
 * notifies through the outbox in the same transaction.
 */
export class IncidentService {
  constructor(private readonly deps: IncidentServiceDeps) {}

  now(): Date {
    return new Date(this.deps.now?.() ?? Date.now());
  }

  /**
   * The outbox rows owed to every receiver for one message about an incident. The text is redacted
   * once more (whatever a template took in) and escaped for Slack and Mattermost (`<!channel>`,
   * `<url|label>` and `@here` reach nobody).
   */
  notify(kind: NotificationKind, key: string, render: (i: Incident) => string) {
    return (incident: Incident): OutboxMessage[] =>
      fanOut(this.deps.receivers, {
        key: `${incident.id}:${key}`,
        kind,
        incidentId: incident.id,
        payload: {
          text: chatEscape(redactSecrets(render(incident))),
          incidentId: incident.id,
          kind,
          severity: incident.severity,
          status: incident.status,
        },
      });
  }

  nextDue(severity: Severity, from: Date): Date {
    return new Date(from.getTime() + UPDATE_INTERVAL_SECONDS[severity] * 1000);
  }

  /**
   * Opens an incident. `initialNotification`: the initial notification's text as rendered (before
   * the redaction and chat escaping of what is sent), for the operator who opened it.
   */
  async create(raw: CreateInput, actor: string): Promise<{ incident: Incident; initialNotification: string }> {
    // The one entry point of operators' texts: stored, published and sent only redacted.
    const input: CreateInput = {
      ...raw,
      title: cleanText(raw.title),
      summary: cleanText(raw.summary),
      ...(raw.eta !== undefined ? { eta: cleanText(raw.eta) } : {}),
    };
    const now = this.now();
    const startedAt = input.startedAt ? new Date(input.startedAt) : now;
    if (startedAt.getTime() > now.getTime() + 60_000)
      throw new BadRequestError('invalid incident', { startedAt: ['must not be in the future'] });
    if (startedAt.getTime() < ALERT_EPOCH_MS)
      throw new BadRequestError('invalid incident', { startedAt: ['must not be before 2000-01-01'] });
    const roles = input.roles ?? {};
    this.checkRoleNames(roles);
    const incident = await this.deps.incidentStore.create(
      {
        severity: input.severity,
        title: input.title,
        summary: input.summary,
        components: input.components,
        source: 'manual',
        createdBy: actor,
        startedAt,
        detectedAt: now,
        // An operator opening an incident has acknowledged it.
        acknowledgedAt: now,
        acknowledgedBy: actor,
        nextUpdateDueAt: this.nextDue(input.severity, now),
        roles,
      },
      [
        { at: now, kind: 'opened', visibility: 'public', status: 'investigating', message: input.summary, author: actor },
        { at: now, kind: 'acknowledged', visibility: 'internal', message: `acknowledged by ${actor}`, author: actor },
      ],
      this.notify('initial', 'initial', (i) => renderInitial(i, input.eta)),
    );
    this.deps.hub.publish('incident.opened', incident, incident.id);
    return { incident, initialNotification: renderInitial(incident, input.eta) };
  }

  async get(id: string): Promise<Incident> {
    const incident = await this.deps.incidentStore.get(id);
    if (!incident) throw new NotFoundError(`no incident ${id}`);
    return incident;
  }

  async update(id: string, raw: UpdateInput, actor: string): Promise<Incident> {
    const input: UpdateInput = {
      ...raw,
      message: cleanText(raw.message),
      ...(raw.eta !== undefined ? { eta: cleanText(raw.eta) } : {}),
      ...(raw.rootCause !== undefined ? { rootCause: cleanText(raw.rootCause) } : {}),
    };
    const current = await this.get(id);
    const now = this.now();
    const to = input.status;
    if (to !== undefined && !canTransition(current.status, to)) {
      throw new ConflictError(`an incident cannot move from ${current.status} to ${to}`, { status: current.status });
    }
    if (current.status === 'resolved')
      throw new ConflictError('the incident is resolved; open a new one for a recurrence', { status: current.status });
    if (input.visibility === 'internal' && to === 'resolved')
      throw new BadRequestError('invalid update', { visibility: ['resolving is public: the status page and receivers must hear of it'] });
    const patch: IncidentPatch = {};
    const entries: NewEntry[] = [];
    if (current.acknowledgedAt === null) {
      Object.assign(patch, { acknowledgedAt: now, acknowledgedBy: actor });
      entries.push({ at: now, kind: 'acknowledged', visibility: 'internal', message: `acknowledged by ${actor}`, author: actor });
    }
    if (to !== undefined) {
      patch.status = to;
      if ((to === 'monitoring' || to === 'resolved') && current.mitigatedAt === null) patch.mitigatedAt = now;
      if (to === 'resolved') {
        patch.resolvedAt = now;
        patch.nextUpdateDueAt = null;
      }
    }
    if (input.rootCause !== undefined) patch.rootCause = input.rootCause;
    if (input.visibility === 'public' && to !== 'resolved') patch.nextUpdateDueAt = this.nextDue(current.severity, now);
    entries.push({
      at: now,
      kind: to !== undefined ? 'status' : 'update',
      visibility: input.visibility,
      status: to ?? current.status,
      message: input.message,
      author: actor,
    });
    const key = `update:${now.getTime()}:${entries.length}:${Math.random().toString(36).slice(2, 8)}`;
    const notify =
      to === 'resolved'
        ? this.notify('resolution', 'resolution', (i) => renderResolution(i, input.message))
        : input.visibility === 'public'
          ? this.notify('update', key, (i) => renderUpdate(i, input.message, input.eta))
          : () => [];
    const incident = await this.change(current, patch, entries, notify);
    this.deps.hub.publish(
      'incident.updated',
      {
        incident,
        update: input.visibility === 'public' ? { message: input.message, status: incident.status, at: now.toISOString() } : null,
      },
      id,
    );
    return incident;
  }

  async acknowledge(id: string, actor: string): Promise<Incident> {
    const current = await this.get(id);
    // Like every other change to a resolved incident (its response record is final).
    if (current.status === 'resolved') throw new ConflictError('the incident is resolved', { status: current.status });
    if (current.acknowledgedAt !== null) return current;
    const now = this.now();
    const incident = await this.change(
      current,
      { acknowledgedAt: now, acknowledgedBy: actor },
      [{ at: now, kind: 'acknowledged', visibility: 'internal', message: `acknowledged by ${actor}`, author: actor }],
      () => [],
    );
    this.deps.hub.publish('incident.updated', { incident, update: null }, id);
    return incident;
  }

  private checkRoleNames(roles: Partial<Record<Role, string>>): void {
    const unknown = Object.entries(roles).filter(([, name]) => !this.deps.tokenNames.includes(name!));
    if (unknown.length > 0) {
      throw new BadRequestError(
        'invalid roles',
        Object.fromEntries(unknown.map(([role]) => [`roles.${role}`, ['must be the name of a configured admin token']])),
      );
    }
  }

  async assignRoles(id: string, roles: Partial<Record<Role, string>>, actor: string): Promise<Incident> {
    this.checkRoleNames(roles);
    const current = await this.get(id);
    if (current.status === 'resolved') throw new ConflictError('the incident is resolved', { status: current.status });
    const now = this.now();
    const merged = { ...current.roles, ...roles };
    const text = Object.entries(roles)
      .map(([r, n]) => `${ROLE_TITLES[r as Role]}: ${n}`)
      .join(', ');
    const patch: IncidentPatch = { roles: merged };
    const entries: NewEntry[] = [
      { at: now, kind: 'roles', visibility: 'internal', message: `roles assigned: ${text}`, author: actor, detail: roles },
    ];
    if (current.acknowledgedAt === null) Object.assign(patch, { acknowledgedAt: now, acknowledgedBy: actor });
    const incident = await this.change(current, patch, entries, () => []);
    this.deps.hub.publish('incident.updated', { incident, update: null }, id);
    return incident;
  }

  private async change(
    current: Incident,
    patch: IncidentPatch,
    entries: NewEntry[],
    notify: (i: Incident) => OutboxMessage[],
  ): Promise<Incident> {
    try {
      return await this.deps.incidentStore.change(current.id, current.status, patch, entries, notify);
    } catch (err) {
      if (err instanceof IncidentConflict) throw new ConflictError('the incident changed meanwhile; read it again and retry');
      throw err;
    }
  }

  list(status?: IncidentStatus | 'open', limit?: number): Promise<Incident[]> {
    return this.deps.incidentStore.list(status, limit);
  }

  /** Queues a reminder for each P0 whose next public update is overdue (once per due time). */
  async remindOverdue(): Promise<number> {
    const overdue = await this.deps.incidentStore.overdue(this.now(), ['P0']);
    const messages = overdue.flatMap((i) => this.notify('reminder', `reminder:${i.nextUpdateDueAt}`, renderReminder)(i));
    await this.deps.incidentStore.enqueue(messages);
    return overdue.length;
  }

  /** Raises the severity (a worse alert joined); a no-op when it is not worse. */
  async raiseSeverity(current: Incident, severity: Severity, at: Date, reason: string): Promise<Incident> {
    if (worse(severity, current.severity) === current.severity) return current;
    return this.change(
      current,
      { severity },
      [
        {
          at,
          kind: 'severity',
          visibility: 'internal',
          message: `severity raised from ${current.severity} to ${severity} by ${reason}`,
          author: 'alertmanager',
        },
      ],
      () => [],
    );
  }
}
