import type { RequestHandler, Router } from 'express';
import { adminAuth } from '../admin/admin-auth.ts';
import { adminJson } from '../admin/admin-json.ts';
import { FailedAuthLimiter } from '../admin/failed-auth-limiter.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import { adminRoutes } from '../routes/admin-routes.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import type { ReadOnlyService } from '../services/read-only/read-only-service.ts';
import type { WriteGate } from '../services/write-gate/write-gate.ts';

/** The admin API's own parts: bounded JSON, token authentication, and the DR state / read-only / audit routes. */
export interface AdminModule {
  json: RequestHandler;
  auth: RequestHandler;
  /** Failed token checks per address, shared by the admin API and health (which reveals details to a token). */
  limiter: FailedAuthLimiter;
  /** Admin routers (read-only mode, DR state, audit). */
  adminRouters: Router[];
}

export function createAdminModule(deps: {
  config: Config;
  logger: Logger;
  dr: DrStateService;
  readOnly: ReadOnlyService;
  audit: AuditLog;
  gate: WriteGate;
  /** The database pair as the state document shows it (roles, lag). */
  databasePair: () => Promise<Record<string, unknown> | undefined>;
  /** Why lifting read-only mode would open writes onto no writable node (fresh probes), or null. */
  noWritableNode?: () => Promise<string | null>;
}): AdminModule {
  const { config, logger, audit, gate } = deps;
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
  const adminRouters = [
    adminRoutes({
      dr: deps.dr,
      readOnly: deps.readOnly,
      audit,
      details: { database: deps.databasePair },
      ...(deps.noWritableNode ? { noWritableNode: deps.noWritableNode } : {}),
      writes: () => ({ refusal: gate.closed(), inFlight: gate.inFlight() }),
    }),
  ];
  return { json: adminJson, auth, limiter, adminRouters };
}
