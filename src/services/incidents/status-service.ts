import { redactSecrets } from '../redact-secrets.ts';
import { withTimeout } from '../../lib/with-timeout.ts';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { Logger } from '../../logger.ts';
import type { EventHub } from './event-hub.ts';
import { COMPONENT_NAMES, COMPONENTS, type Component, type IncidentStatus, type Severity } from './incident-model.ts';
import type { IncidentStore } from './incident-store.ts';
import { dailyHistory, historyStart, type DayState } from './component-history.ts';
import { componentStates, type ComponentState, type LiveFacts } from './live-state.ts';

/** Open P2 and P3 incidents listed on the status page per severity (the rest are counted). */
export const PUBLIC_PER_SEVERITY = 20;

const RANK: Record<ComponentState, number> = { operational: 0, unknown: 1, degraded: 2, outage: 3 };

export interface PublicIncident {
  id: string;
  title: string;
  severity: Severity;
  status: IncidentStatus;
  components: Component[];
  startedAt: string;
  resolvedAt: string | null;
  updates: { at: string; status: IncidentStatus | null; message: string }[];
}

export interface StatusSnapshot {
  status: 'operational' | 'degraded' | 'outage' | 'unknown';
  updatedAt: string;
  components: { id: Component; name: string; state: ComponentState; incidents: string[] }[];
  /** null: PostgreSQL could not be read; the page says the incident state is unknown. */
  incidents: PublicIncident[] | null;
  /** Open P2 and P3 incidents beyond those listed (P0 and P1 are always all listed). */
  moreIncidents: { severity: Severity; count: number }[];
  history: { id: Component; name: string; uptimePercent: number | null; days: DayState[] }[] | null;
}

/**
 * Removes what a public page must never show, should an operator or an alert have written it into
 * a public text: URLs, host names, IP addresses, host:port pairs.
 */
// Credentials go first (redactSecrets), then addresses.
export function scrubPublic(text: string): string {
  return redactSecrets(text)
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, '[address]')
    .replace(/\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b/g, '[address]')
    .replace(/\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}(?::\d+)?\b/gi, '[host]')
    .replace(/\b[a-z0-9][a-z0-9-]*:\d{2,5}\b/gi, '[host]');
}

export interface StatusServiceDeps {
  facts: () => Promise<LiveFacts>;
  incidentStore: IncidentStore;
  prisma: () => PrismaClient;
  hub: EventHub;
  logger: Logger;
  /** Bound on each PostgreSQL read behind the page: past it, that part is "unknown". */
  dbTimeoutMs: number;
  /** The active database's last probe passed: while it fails, the recorder leaves PostgreSQL alone. */
  databaseUp: () => boolean;
  now?: () => number;
}

/**
 * The public status: component states from health, open incidents with their public updates only,
 * and 90 days of history from recorded state changes. Each part fails on its own: with PostgreSQL
 * down the components still show and incidents and history say "unknown".
 */
export class StatusService {
  private last?: Record<Component, ComponentState>;
  /** The newest stored state per component, as far as this instance knows (read once). */
  private stored?: Partial<Record<Component, ComponentState>>;
  /** State changes not yet written (PostgreSQL down); written in order when it returns. */
  private readonly unwritten: { component: Component; state: ComponentState; at: Date }[] = [];
  private cached?: { at: number; value: Promise<StatusSnapshot> };

  constructor(private readonly deps: StatusServiceDeps) {
    // A change anywhere (this instance, or another through Redis) is shown on the next read.
    deps.hub.subscribe((event) => {
      if (event.type.startsWith('incident.') || event.type === 'health.transition') this.invalidate();
    });
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  invalidate(): void {
    this.cached = undefined;
  }

  /** One snapshot shared by concurrent callers for a short while (many SSE clients, one read). */
  snapshot(): Promise<StatusSnapshot> {
    if (this.cached && this.now() - this.cached.at < 250) return this.cached.value;
    const value = this.compute();
    this.cached = { at: this.now(), value };
    return value;
  }

  private async compute(): Promise<StatusSnapshot> {
    const states = await this.deps
      .facts()
      .then(componentStates)
      .catch(() => Object.fromEntries(COMPONENTS.map((c) => [c, 'unknown'])) as Record<Component, ComponentState>);
    // Bounded reads (not gated on the probe: a probe flapping on a loaded host must not blank the page).
    const [open, history] = await Promise.all([
      withTimeout(this.publicIncidents(), this.deps.dbTimeoutMs, 'timeout').catch(() => null),
      withTimeout(this.history(), this.deps.dbTimeoutMs, 'timeout').catch(() => null),
    ]);
    const incidents = open?.incidents ?? null;
    const moreIncidents = open?.more ?? [];
    const components = COMPONENTS.map((id) => ({
      id,
      name: COMPONENT_NAMES[id],
      state: states[id],
      incidents: (incidents ?? []).filter((i) => i.components.includes(id)).map((i) => i.id),
    }));
    const worst = components.reduce((w, c) => (RANK[c.state] > RANK[w] ? c.state : w), 'operational' as ComponentState);
    // An open incident is news even while every probe passes (e.g. errors the probes cannot see).
    const status = worst === 'operational' && (incidents ?? []).length > 0 ? 'degraded' : worst;
    return { status, updatedAt: new Date(this.now()).toISOString(), components, incidents, moreIncidents, history };
  }

  /**
   * Every open P0 and P1, and up to PUBLIC_PER_SEVERITY of each lower severity (the rest counted),
   * worst first: an open P0 never drops off the page behind newer minor incidents.
   */
  private async publicIncidents(): Promise<{ incidents: PublicIncident[]; more: StatusSnapshot['moreIncidents'] }> {
    const { incidents: open, more } = await this.deps.incidentStore.openBySeverity(PUBLIC_PER_SEVERITY);
    const timelines = await this.deps.incidentStore.publicTimelines(open.map((i) => i.id));
    const incidents = open.map((i) => ({
      id: i.id,
      title: scrubPublic(i.title),
      severity: i.severity,
      status: i.status,
      components: i.components,
      startedAt: i.startedAt,
      resolvedAt: i.resolvedAt,
      updates: (timelines.get(i.id) ?? []).reverse().map((u) => ({ at: u.at, status: u.status, message: scrubPublic(u.message) })),
    }));
    return { incidents, more };
  }

  /** Per component and UTC day: the worst state seen and the minutes spent degraded or out. */
  async history(): Promise<StatusSnapshot['history']> {
    const now = this.now();
    const from = historyStart(now);
    const prisma = this.deps.prisma();
    const rows = await prisma.componentStateChange.findMany({
      where: { at: { gte: new Date(from) } },
      orderBy: [{ at: 'asc' }, { id: 'asc' }],
    });
    const before = await Promise.all(
      COMPONENTS.map((c) =>
        prisma.componentStateChange.findFirst({
          where: { component: c, at: { lt: new Date(from) } },
          orderBy: [{ at: 'desc' }, { id: 'desc' }],
        }),
      ),
    );
    return COMPONENTS.map((component, index) => {
      const changes = rows.filter((r) => r.component === component).map((r) => ({ at: r.at.getTime(), state: r.state as ComponentState }));
      const { days, uptimePercent } = dailyHistory((before[index]?.state as ComponentState | undefined) ?? null, changes, from, now);
      return { id: component, name: COMPONENT_NAMES[component], uptimePercent, days };
    });
  }

  /**
   * Watches component states (every health period, no I/O): a change is announced at once and
   * queued with its time for the history. The first states seen are queued too.
   */
  async record(): Promise<void> {
    const states = componentStates(await this.deps.facts());
    const at = new Date(this.now());
    const before = this.last;
    const changed = COMPONENTS.filter((c) => before?.[c] !== states[c]);
    for (const c of changed) this.unwritten.push({ component: c, state: states[c], at });
    this.last = states;
    if (before && changed.length > 0) {
      this.deps.hub.publish('health.transition', {
        components: Object.fromEntries(changed.map((c) => [c, { from: before[c], to: states[c] }])),
      });
      this.invalidate();
    }
    if (this.unwritten.length > 10_000) this.unwritten.splice(0, this.unwritten.length - 10_000);
  }

  /**
   * Writes the queued changes (from the periodic checks, while PostgreSQL answers). A queued state
   * equal to the component's stored latest is no change and is dropped, so a restart or a second
   * instance does not record what did not happen.
   */
  async flushHistory(): Promise<number> {
    if (this.unwritten.length === 0 || !this.deps.databaseUp()) return 0;
    this.stored ??= await withTimeout(this.latestStored(), this.deps.dbTimeoutMs * 3, 'timeout');
    const batch = this.unwritten.slice();
    const latest = { ...this.stored };
    const rows = batch.filter((r) => {
      if (latest[r.component] === r.state) return false;
      latest[r.component] = r.state;
      return true;
    });
    if (rows.length > 0)
      await withTimeout(this.deps.prisma().componentStateChange.createMany({ data: rows }), this.deps.dbTimeoutMs * 3, 'timeout');
    this.unwritten.splice(0, batch.length);
    this.stored = latest;
    if (rows.length > 0) this.invalidate();
    return rows.length;
  }

  private async latestStored(): Promise<Partial<Record<Component, ComponentState>>> {
    const rows = await Promise.all(
      COMPONENTS.map((c) =>
        this.deps.prisma().componentStateChange.findFirst({ where: { component: c }, orderBy: [{ at: 'desc' }, { id: 'desc' }] }),
      ),
    );
    return Object.fromEntries(rows.flatMap((r) => (r ? [[r.component, r.state]] : [])));
  }
}
