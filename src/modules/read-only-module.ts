import type { RequestHandler } from 'express';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import { readOnlyGuard, readOnlyHeader } from '../http/read-only-guard.ts';
import { ReadOnlyService } from '../services/read-only/read-only-service.ts';
import type { WriteRefusal } from '../services/write-gate/write-gate.ts';

/** Read-only mode: the service, the X-Read-Only header on every answer, the guard before application routes. */
export interface ReadOnlyModule {
  service: ReadOnlyService;
  header: RequestHandler;
  guard: RequestHandler;
  stop(): void;
}

export function createReadOnlyModule(deps: {
  dr: DrStateService;
  audit: AuditLog;
  metrics: Metrics;
  logger: Logger;
  /** Reasons writes would still be refused if the mode were lifted (the database capability's). */
  refusal: () => WriteRefusal | null;
  /**
   * What a read-only TTL expiry needs: null when the active target is verified writable (a fresh
   * probe), else why not; checked before the write refusals.
   */
  liftCheck?: () => Promise<string | null>;
}): ReadOnlyModule {
  const service = new ReadOnlyService({
    dr: deps.dr,
    audit: deps.audit,
    metrics: deps.metrics,
    logger: deps.logger,
    liftBlockedBy: async () => {
      // The fresh check first (it probes the active target), then the write refusal on that result.
      const unverified = deps.liftCheck ? await deps.liftCheck() : null;
      if (unverified) return unverified;
      return deps.refusal()?.message ?? null;
    },
  });
  return {
    service,
    header: readOnlyHeader(service),
    guard: readOnlyGuard(service, deps.metrics),
    stop: () => service.stop(),
  };
}
