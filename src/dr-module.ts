import type { RequestHandler, Router } from 'express';
import type { Redis } from 'ioredis';
import { adminAuth } from './admin/admin-auth.ts';
import { adminJson, adminRoutes, type StateDetails } from './routes/admin-routes.ts';
import { FailedAuthLimiter } from './admin/failed-auth-limiter.ts';
import { AuditLog } from './services/audit/audit-log.ts';
import { PrismaAuditSink } from './services/audit/prisma-audit-sink.ts';
import { RedisAuditSpool } from './services/audit/redis-audit-spool.ts';
import type { Config } from './config/config.ts';
import { ClusterLock, RedisLockStore } from './services/dr-state/cluster-lock.ts';
import { DrStateService } from './services/dr-state/dr-state-service.ts';
import { RedisDrStateStore } from './services/dr-state/dr-state-store.ts';
import { redisSubscribe } from './services/dr-state/redis-subscriber.ts';
import type { PrismaClient } from './generated/prisma/client.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics/metrics.ts';
import { readOnlyGuard, readOnlyHeader } from './services/read-only/read-only-guard.ts';
import { ReadOnlyService } from './services/read-only/read-only-service.ts';
import { createRedisClient, waitReady } from './adapters/redis-client.ts';
import { drStateFile } from './services/dr-state/dr-state-file.ts';
import { readOnlyActive, type DrState } from './services/dr-state/dr-state.ts';
import { WriteGate, type WriteRefusal } from './services/write-gate/write-gate.ts';
import { writeGateMiddleware } from './services/write-gate/write-gate-middleware.ts';

export const DR_SYNC_INTERVAL_MS = 1000;
export const AUDIT_FLUSH_INTERVAL_MS = 2000;
/** How long a write barrier waits for commits under way before failing them. */
export const BARRIER_WAIT_MS = 5000;
/**
 * When the lease runs out, commits under way are waited for this long, then failed (never
 * acknowledged): well within the skew allowance other instances give this one's heartbeat.
 */
export const LEASE_BARRIER_WAIT_MS = 500;

export interface DrModule {
  state: DrStateService;
  store: RedisDrStateStore;
  /** The cluster-wide lock of DR operations (database, media switch, media sync). */
  locks: ClusterLock;
  readOnly: ReadOnlyService;
  audit: AuditLog;
  /** The write barrier every client write passes through. */
  gate: WriteGate;
  limiter: FailedAuthLimiter;
  /** Further reasons to refuse writes (the database capability: standby, fenced, older timeline). */
  addWriteRefusal(check: () => WriteRefusal | null): void;
  /**
   * What a read-only TTL expiry needs: null when the active target is verified writable (a fresh
   * probe), else why not. Until set, the registered write refusals decide.
   */
  setLiftCheck(check: () => Promise<string | null>): void;
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
    file: drStateFile(config.drStateFile),
    leaseMs: config.drStateLeaseMs,
  });
  const refusals: (() => WriteRefusal | null)[] = [];
  let liftCheck: (() => Promise<string | null>) | undefined;
  const gate = new WriteGate(() => {
    if (!state.known()) return { code: 'state_unknown', message: 'the DR state is unknown (Redis unreachable since start and no state file); writes are refused until it is known' };
    if (state.leaseExpired()) {
      return { code: 'state_stale', message: `the shared DR state could not be confirmed in Redis for longer than the lease (${state.leaseMs} ms); writes are refused until it is` };
    }
    if (readOnlyActive(state.current())) return { code: 'read_only', message: 'read-only mode is on' };
    for (const check of refusals) {
      const refusal = check();
      if (refusal) return refusal;
    }
    return null;
  });
  // Registered first, so the barrier is raised before any other part follows the new state.
  state.onApply(async (next, previous) => {
    if (!writeRelevantChange(next, previous)) return;
    const report = await gate.barrier(BARRIER_WAIT_MS);
    metrics.writeBarrierWaited.inc(report.waitedFor);
    state.annotations.barrier = { version: next.version, ...report };
    if (report.inFlight > 0) logger.warn({ version: next.version, ...report }, 'write barrier: writes running under the previous DR state were waited for or failed');
  });
  // The lease ran out: no commit admitted under the unconfirmed state may be acknowledged later.
  state.onLeaseLost(() => {
    void gate.barrier(LEASE_BARRIER_WAIT_MS).then((report) => {
      if (report.inFlight > 0) logger.warn({ ...report }, 'lease lost: writes running were waited for or failed');
    });
  });
  const audit = new AuditLog({
    sink: new PrismaAuditSink(deps.prisma),
    spool: new RedisAuditSpool(redis, prefix, config.instanceId),
    logger,
    instanceId: config.instanceId,
    flushIntervalMs: AUDIT_FLUSH_INTERVAL_MS,
  });
  const readOnly = new ReadOnlyService({
    dr: state,
    audit,
    metrics,
    logger,
    liftBlockedBy: async () => {
      // The fresh check first (it probes the active target), then every write refusal on that result.
      const unverified = liftCheck ? await liftCheck() : null;
      if (unverified) return unverified;
      for (const check of refusals) {
        const refusal = check();
        if (refusal) return refusal.message;
      }
      return null;
    },
  });
  const limiter = new FailedAuthLimiter();
  const auth = adminAuth({
    tokens: config.adminTokens,
    limiter,
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
    locks: new ClusterLock(new RedisLockStore(redis, `${prefix}dr:lock:`), config.instanceId),
    readOnly,
    audit,
    gate,
    limiter,
    addWriteRefusal: (check) => refusals.push(check),
    setLiftCheck: (check) => {
      liftCheck = check;
    },
    subscriber,
    headers: [readOnlyHeader(readOnly)],
    guards: [readOnlyGuard(readOnly, metrics), writeGateMiddleware(gate)],
    admin: { json: adminJson, auth, routers: [adminRoutes({ dr: state, readOnly, audit, details, writes: () => ({ refusal: gate.closed(), inFlight: gate.inFlight() }) })], details },
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

/** Changes after which a write admitted earlier must not commit: read-only mode, the database part. */
function writeRelevantChange(next: DrState, previous: DrState): boolean {
  return JSON.stringify(next.readOnly) !== JSON.stringify(previous.readOnly) || JSON.stringify(next.database) !== JSON.stringify(previous.database);
}
