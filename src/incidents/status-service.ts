import type { PrismaClient } from '../generated/prisma/client.ts';
import type { Logger } from '../logger.ts';
import type { EventHub } from './event-hub.ts';
import { COMPONENT_NAMES, COMPONENTS, type Component, type IncidentStatus, type Severity } from './incident-model.ts';
import type { IncidentStore } from './incident-store.ts';
import { dailyHistory, historyStart, type DayState } from './component-history.ts';
import { componentStates, type ComponentState, type LiveFacts } from './live-state.ts';

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
  history: { id: Component; name: string; uptimePercent: number | null; days: DayState[] }[] | null;
}

/**
 * Removes what a public page must never show, should an operator or an alert have written it into
 * a public text: URLs, host names, IP addresses, host:port pairs.
 */
export function scrubPublic(text: string): string {
  return text
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, '[address]')
    .replace(/\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b/g, '[address]')
    .replace(/\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}(?::\d+)?\b/gi, '[host]')
    .replace(/\b[a-z0-9][a-z0-9-]*:\d{2,5}\b/gi, '[host]');
}

export interface StatusServiceDeps {
  facts: () => Promise<LiveFacts>;
  store: IncidentStore;
  prisma: () => PrismaClient;
  hub: EventHub;
  logger: Logger;
  /** Bound on each PostgreSQL read behind the page: past it, that part is "unknown". */
  dbTimeoutMs: number;
  /** The active database's last probe passed: while it fails, PostgreSQL is not even tried. */
  databaseUp: () => boolean;
  now?: () => number;
}

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), ms)))]).finally(() => clearTimeout(timer));
}

/**
 * The public status: component states from health, open incidents with their public updates only,
 * and 90 days of history from recorded state changes. Each part fails on its own: with PostgreSQL
 * down the components still show and incidents and history say "unknown".
 */
export class StatusService {
  private last?: Record<Component, ComponentState>;
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
    const dbUp = this.deps.databaseUp();
    const [incidents, history] = await Promise.all([
      dbUp ? within(this.publicIncidents(), this.deps.dbTimeoutMs).catch(() => null) : null,
      dbUp ? within(this.history(), this.deps.dbTimeoutMs).catch(() => null) : null,
    ]);
    const components = COMPONENTS.map((id) => ({
      id,
      name: COMPONENT_NAMES[id],
      state: states[id],
      incidents: (incidents ?? []).filter((i) => i.components.includes(id)).map((i) => i.id),
    }));
    const worst = components.reduce((w, c) => (RANK[c.state] > RANK[w] ? c.state : w), 'operational' as ComponentState);
    // An open incident is news even while every probe passes (e.g. errors the probes cannot see).
    const status = worst === 'operational' && (incidents ?? []).length > 0 ? 'degraded' : worst;
    return { status, updatedAt: new Date(this.now()).toISOString(), components, incidents, history };
  }

  private async publicIncidents(): Promise<PublicIncident[]> {
    const open = await this.deps.store.list('open', 20);
    return Promise.all(
      open.map(async (i) => ({
        id: i.id,
        title: scrubPublic(i.title),
        severity: i.severity,
        status: i.status,
        components: i.components,
        startedAt: i.startedAt,
        resolvedAt: i.resolvedAt,
        updates: (await this.deps.store.timeline(i.id, 'public')).reverse().map((u) => ({ at: u.at, status: u.status, message: scrubPublic(u.message) })),
      })),
    );
  }

  /** Per component and UTC day: the worst state seen and the minutes spent degraded or out. */
  async history(): Promise<StatusSnapshot['history']> {
    const now = this.now();
    const from = historyStart(now);
    const prisma = this.deps.prisma();
    const rows = await prisma.componentStateChange.findMany({ where: { at: { gte: new Date(from) } }, orderBy: [{ at: 'asc' }, { id: 'asc' }] });
    const before = await Promise.all(COMPONENTS.map((c) => prisma.componentStateChange.findFirst({ where: { component: c, at: { lt: new Date(from) } }, orderBy: [{ at: 'desc' }, { id: 'desc' }] })));
    return COMPONENTS.map((component, index) => {
      const changes = rows.filter((r) => r.component === component).map((r) => ({ at: r.at.getTime(), state: r.state as ComponentState }));
      const { days, uptimePercent } = dailyHistory((before[index]?.state as ComponentState | undefined) ?? null, changes, from, now);
      return { id: component, name: COMPONENT_NAMES[component], uptimePercent, days };
    });
  }

  /**
   * Records component state changes (the history) and announces health transitions. Called on
   * every health period; while PostgreSQL is down, changes wait here with their times.
   */
  async record(): Promise<void> {
    const states = componentStates(await this.deps.facts());
    const at = new Date(this.now());
    if (this.last === undefined) {
      if (!this.deps.databaseUp()) return;
      // Start from what is stored, so a restart does not record a change that did not happen.
      const stored = await within(this.latestStored(), this.deps.dbTimeoutMs).catch(() => undefined);
      if (stored === undefined) return;
      this.last = { ...stored } as Record<Component, ComponentState>;
    }
    const changed = COMPONENTS.filter((c) => this.last![c] !== states[c]);
    for (const c of changed) this.unwritten.push({ component: c, state: states[c], at });
    if (changed.length > 0) {
      this.deps.hub.publish('health.transition', { components: Object.fromEntries(changed.map((c) => [c, { from: this.last![c] ?? null, to: states[c] }])) });
      this.last = states;
      this.invalidate();
    }
    if (this.unwritten.length > 0 && this.deps.databaseUp()) {
      const batch = this.unwritten.slice();
      try {
        await within(this.deps.prisma().componentStateChange.createMany({ data: batch }), this.deps.dbTimeoutMs * 3);
        this.unwritten.splice(0, batch.length);
      } catch {
        if (this.unwritten.length > 10_000) this.unwritten.splice(0, this.unwritten.length - 10_000);
      }
    }
  }

  private async latestStored(): Promise<Partial<Record<Component, ComponentState>>> {
    const rows = await Promise.all(COMPONENTS.map((c) => this.deps.prisma().componentStateChange.findFirst({ where: { component: c }, orderBy: [{ at: 'desc' }, { id: 'desc' }] })));
    return Object.fromEntries(rows.flatMap((r) => (r ? [[r.component, r.state]] : [])));
  }
}
