import type { RequestHandler, Router } from 'express';
import type { Redis } from 'ioredis';
import { adminAuth } from './admin/admin-auth.ts';
import { adminJson, adminRoutes, type StateDetails } from './admin/admin-routes.ts';
import { FailedAuthLimiter } from './admin/failed-auth-limiter.ts';
import { AuditLog } from './audit/audit-log.ts';
import { PrismaAuditSink } from './audit/prisma-audit-sink.ts';
import { RedisAuditSpool } from './audit/redis-audit-spool.ts';
import type { Config } from './config/config.ts';
import { DrStateService } from './dr-state/dr-state-service.ts';
import { RedisDrStateStore } from './dr-state/dr-state-store.ts';
import { redisSubscribe } from './dr-state/redis-subscriber.ts';
import type { PrismaClient } from './generated/prisma/client.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics/metrics.ts';
import { readOnlyGuard, readOnlyHeader } from './read-only/read-only-guard.ts';
import { ReadOnlyService } from './read-only/read-only-service.ts';
import { createRedisClient, waitReady } from './redis/redis-client.ts';

export const DR_SYNC_INTERVAL_MS = 1000;
export const AUDIT_FLUSH_INTERVAL_MS = 2000;

export interface DrModule {
  state: DrStateService;
  store: RedisDrStateStore;
  readOnly: ReadOnlyService;
  audit: AuditLog;
  subscriber: Redis;
  headers: RequestHandler[];
  guards: RequestHandler[];
  admin: { json: RequestHandler; auth: RequestHandler; routers: Router[]; details: StateDetails };
  /** Further admin routers (database and media failover) register here before start. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Composition of the shared DR state, the audit log, read-only mode and the admin API. */
export function createDrModule(deps: { config: Config; logger: Logger; metrics: Metrics; redis: Redis; prefix: string; prisma: () => PrismaClient }): DrModule {
  const { config, logger, metrics, redis, prefix } = deps;
  const subscriber = createRedisClient(config.redisUrl, logger, 'sav3-api-dr-subscriber', { offlineQueue: true });
  const store = new RedisDrStateStore(redis, prefix);
  const state = new DrStateService({
    store,
    subscribe: redisSubscribe(subscriber, store.channel),
    instanceId: config.instanceId,
    syncIntervalMs: DR_SYNC_INTERVAL_MS,
    metrics,
    logger,
  });
  const audit = new AuditLog({
    sink: new PrismaAuditSink(deps.prisma),
    spool: new RedisAuditSpool(redis, prefix, config.instanceId),
    logger,
    instanceId: config.instanceId,
    flushIntervalMs: AUDIT_FLUSH_INTERVAL_MS,
  });
  const readOnly = new ReadOnlyService({ dr: state, audit, metrics, logger });
  const auth = adminAuth({
    tokens: config.adminTokens,
    limiter: new FailedAuthLimiter(),
    logger,
    onForbidden: async (req, admin) => {
      await audit.record({
        actor: admin.name,
        role: admin.role,
        action: `${req.method} ${req.baseUrl}${req.path}`,
        result: 'refused',
        before: null,
        after: null,
        detail: { code: 'forbidden' },
        requestId: req.id === undefined ? null : String(req.id),
      });
    },
  });
  const details: StateDetails = {};
  return {
    state,
    store,
    readOnly,
    audit,
    subscriber,
    headers: [readOnlyHeader(readOnly)],
    guards: [readOnlyGuard(readOnly, metrics)],
    admin: { json: adminJson, auth, routers: [adminRoutes({ dr: state, readOnly, audit, details })], details },
    async start() {
      // Give a reachable Redis a moment to connect, so the first sync sees the shared state.
      await Promise.all([waitReady(redis, 2000), waitReady(subscriber, 2000)]);
      await state.start();
      audit.start();
    },
    async stop() {
      readOnly.stop();
      audit.stop();
      await audit.flush();
      await state.stop();
    },
  };
}
