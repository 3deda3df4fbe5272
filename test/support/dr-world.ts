import { AuditLog } from '../../src/services/audit/audit-log.ts';
import { ClusterLock } from '../../src/services/dr-state/cluster-lock.ts';
import { DrStateService } from '../../src/services/dr-state/dr-state-service.ts';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.ts';
import { MemoryAuditSink, MemoryAuditSpool, MemoryDrStateStore, MemoryLockStore } from './fakes.ts';
import { captureLogger } from './log-capture.ts';

/**
 * The shared parts one or more instances see in a unit test, all in memory: the DR state store,
 * the lock store and the audit table. `instance(id)` builds an instance's real DrStateService,
 * AuditLog and ClusterLock over them; the test breaks a port with its `down` flag.
 */
export function drWorld(options: { now?: () => number } = {}) {
  const store = new MemoryDrStateStore();
  const lockStore = new MemoryLockStore();
  const sink = new MemoryAuditSink();
  const spool = new MemoryAuditSpool();
  const instance = (id = 'api-1') => {
    const { logger, text } = captureLogger();
    const metrics: Metrics = createMetrics();
    const dr = new DrStateService({
      stateStore: store,
      subscribe: () => ({ close: async () => undefined }),
      instanceId: id,
      syncIntervalMs: 60_000,
      metrics,
      logger,
      now: options.now,
    });
    const audit = new AuditLog({ sink, spool, logger, instanceId: id, flushIntervalMs: 60_000, now: options.now });
    return { id, dr, audit, locks: new ClusterLock(lockStore, id), metrics, logger, log: text };
  };
  return { store, lockStore, sink, spool, instance };
}
