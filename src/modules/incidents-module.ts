import type { Router } from 'express';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { Config } from '../config/config.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { HealthService } from '../health/health-service.ts';
import type { Lifecycle } from '../lifecycle/lifecycle.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { LiveEvents } from './live-events.ts';
import { AlertIntake } from '../services/incidents/alert-intake.ts';
import { alertWebhookRoutes } from '../routes/alert-webhook-routes.ts';
import { drActionTimeline } from '../services/incidents/dr-action-timeline.ts';
import type { EventHub } from '../services/incidents/event-hub.ts';
import { assess } from '../services/incidents/incident-assessor.ts';
import { RESPONSE_TARGET_SECONDS, SEVERITIES } from '../services/incidents/incident-model.ts';
import { incidentRoutes } from '../routes/incident-routes.ts';
import { IncidentService } from '../services/incidents/incident-service.ts';
import { IncidentStore } from '../services/incidents/incident-store.ts';
import { backupAgeSeconds, type HealthSnapshot, type LiveFacts } from '../services/incidents/live-state.ts';
import {
  errorSummary,
  fetchSender,
  NotificationOutboxWorker,
  receiversOf,
  type WebhookSender,
} from '../services/incidents/notification-outbox.ts';
import { SseStreams } from '../http/sse.ts';
import { statusRoutes } from '../routes/status-routes.ts';
import { StatusService } from '../services/incidents/status-service.ts';

/** Period of the open-incident gauges and the P0 reminder check. */
export const CHECKS_INTERVAL_MS = 5000;

export interface IncidentsModule {
  hub: EventHub;
  incidents: IncidentService;
  status: StatusService;
  outbox: NotificationOutboxWorker;
  /** Public routes (status page, Alertmanager webhook), mounted before admin authentication. */
  publicRouters: Router[];
  adminRouters: Router[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface IncidentsModuleDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  prisma: () => PrismaClient;
  audit: AuditLog;
  dr: DrStateService;
  health: HealthService;
  lifecycle: Lifecycle;
  /** The live events hub (built before the modules); started and stopped with this module. */
  events: LiveEvents;
  /** Whether a media backend other than the active one answers (from its probe). */
  otherMediaUp: () => Promise<boolean>;
  /**
   * Whether the active database's last probe passed. Background work and the status page leave
   * PostgreSQL alone while it fails, so a dead or hung server gets no connections from them.
   */
  databaseUp: () => boolean;
  sender?: WebhookSender;
  outboxPollMs?: number;
  outboxBackoffMs?: number;
  checksIntervalMs?: number;
  /** Bounds on anonymous /status/events streams: in all, and per client address. */
  publicStreams?: { max?: number; perAddress?: number };
}

/** Incident response: records, timeline, notifications, classification, status page, live events. */
export function createIncidentsModule(deps: IncidentsModuleDeps): IncidentsModule {
  const { config, logger, metrics } = deps;
  const { hub } = deps.events;
  const store = new IncidentStore(deps.prisma);
  const receivers = receiversOf(config.notifyWebhookUrls);
  const incidents = new IncidentService({
    incidentStore: store,
    receivers,
    hub,
    tokenNames: config.adminTokens.map((t) => t.name),
    logger,
  });
  const outbox = new NotificationOutboxWorker({
    prisma: deps.prisma,
    receivers,
    sender: deps.sender ?? fetchSender,
    instanceId: config.instanceId,
    logger,
    metrics,
    pollMs: deps.outboxPollMs ?? 1000,
    backoffMs: deps.outboxBackoffMs ?? 2000,
    maxBackoffMs: 5 * 60_000,
    sendTimeoutMs: 5000,
    databaseUp: deps.databaseUp,
  });
  const facts = async (): Promise<LiveFacts> => ({
    health: (await deps.health.overall(false)) as unknown as HealthSnapshot,
    otherMediaUp: await deps.otherMediaUp().catch(() => false),
    replicaConfigured: config.databaseReplicaUrl !== undefined,
    backupAgeSeconds: await backupAgeSeconds(metrics.registry).catch(() => undefined),
    // The configured bound (BACKUP_MAX_AGE), the same as the backup alert's and the inventory's.
    backupMaxAgeSeconds: config.backup.maxAgeSeconds,
  });
  const status = new StatusService({
    facts,
    incidentStore: store,
    prisma: deps.prisma,
    hub,
    logger,
    dbTimeoutMs: Math.max(200, config.healthTimeoutMs),
    databaseUp: deps.databaseUp,
  });
  // Separate pools: anonymous status-page streams (bounded per client address too) can never take
  // the operators' live follow (/admin/events) away.
  const adminStreams = new SseStreams({ max: 200, heartbeatMs: 15_000 });
  const publicStreams = new SseStreams({
    max: deps.publicStreams?.max ?? 1000,
    perAddress: deps.publicStreams?.perAddress ?? 10,
    heartbeatMs: 15_000,
  });

  deps.audit.onWritten(drActionTimeline(store, hub));
  const alerts = new AlertIntake({ store, hub, incidents });
  deps.dr.onApply((state) =>
    hub.publish('dr.state', { version: state.version, readOnly: state.readOnly, database: state.database, media: state.media }),
  );
  for (const s of SEVERITIES) metrics.incidentResponseTarget.set({ severity: s }, RESPONSE_TARGET_SECONDS[s]);

  // Counted by PostgreSQL (GROUP BY severity), not from a bounded list: a thousand minor
  // incidents cannot hide a P0 from the gauges and the response-target alert.
  const refreshGauges = async () => {
    const counts = await store.openCounts();
    const now = Date.now();
    for (const s of SEVERITIES) {
      const { open, oldestUnacknowledged } = counts.get(s) ?? { open: 0, oldestUnacknowledged: null };
      metrics.incidentsOpen.set({ severity: s }, open);
      metrics.incidentUnacknowledged.set(
        { severity: s },
        oldestUnacknowledged === null ? 0 : Math.max(0, Math.round((now - oldestUnacknowledged.getTime()) / 1000)),
      );
    }
  };

  // Each periodic job runs one at a time (a call meanwhile makes one more run after it): a hung
  // PostgreSQL (queries bounded by the pool's query timeout) delays gauges and reminders, never
  // the history recorder.
  const guarded = (name: string, job: () => Promise<unknown>) => {
    let busy = false;
    let again = false;
    const run = async (): Promise<void> => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        await job();
      } catch (err) {
        logger.warn({ err: errorSummary(err) }, `${name}: PostgreSQL unavailable; will retry`);
      } finally {
        busy = false;
      }
      if (again) {
        again = false;
        await run();
      }
    };
    return run;
  };
  const recordHistory = guarded('status history', () => status.record());
  const incidentChecks = guarded('incident gauges, reminders and history', async () => {
    if (deps.databaseUp()) await Promise.all([refreshGauges(), incidents.remindOverdue(), status.flushHistory()]);
  });
  // A change made here or on another instance shows in the gauges at once, not a period later.
  hub.subscribe((event) => {
    if (event.type === 'incident.opened' || event.type === 'incident.updated') void incidentChecks();
  });
  let historyTimer: NodeJS.Timeout | undefined;
  let checksTimer: NodeJS.Timeout | undefined;
  let shutdownWatch: NodeJS.Timeout | undefined;

  return {
    hub,
    incidents,
    status,
    outbox,
    publicRouters: [
      statusRoutes({ status, hub, streams: publicStreams, lifecycle: deps.lifecycle }),
      alertWebhookRoutes({ alerts, token: config.alertmanagerWebhookToken, logger }),
    ],
    adminRouters: [
      incidentRoutes({ incidents, store, audit: deps.audit, assess: async () => assess(await facts()), hub, streams: adminStreams }),
    ],
    async start() {
      await deps.events.start();
      outbox.start();
      // Component states follow health at its period (in memory); gauges, reminders and writing
      // the history need no finer than 5 s. Nothing touches PostgreSQL at once: the first probe
      // round (bounded by HEALTH_TIMEOUT_MS) goes first.
      historyTimer = setInterval(() => void recordHistory(), Math.min(config.healthIntervalMs, 5000));
      historyTimer.unref();
      checksTimer = setInterval(() => void incidentChecks(), deps.checksIntervalMs ?? CHECKS_INTERVAL_MS);
      checksTimer.unref();
      // Streams end as soon as shutdown begins, so draining never waits on them.
      shutdownWatch = setInterval(() => {
        if (deps.lifecycle.shuttingDown) {
          publicStreams.closeAll();
          adminStreams.closeAll();
        }
      }, 100);
      shutdownWatch.unref();
    },
    async stop() {
      clearInterval(historyTimer);
      clearInterval(checksTimer);
      clearInterval(shutdownWatch);
      publicStreams.closeAll();
      adminStreams.closeAll();
      await outbox.stop();
      deps.events.stop();
    },
  };
}
