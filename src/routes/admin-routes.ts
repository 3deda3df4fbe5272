import { Router } from 'express';
import { z } from 'zod';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import { AppError, ConflictError, DependencyUnavailableError } from '../http/app-error.ts';
import type { DrState } from '../services/dr-state/dr-state.ts';
import { parseOrThrow, wholeNumberParam } from '../http/validate.ts';
import type { ReadOnlyService } from '../services/read-only/read-only-service.ts';
import { audited, barrierSummary, confirmedPropagation, fenceSummary } from '../admin/audited.ts';
import { principal } from '../admin/admin-auth.ts';

export const readOnlyBody = z.strictObject({
  enabled: z.boolean(),
  reason: z.string().trim().min(1, { error: 'must say why' }).max(500),
  ttlSeconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .optional(),
});

/** A lift of read-only mode refused: no configured database node takes writes, or the active target does not. */
export class NoWritableNodeError extends AppError {
  constructor(reason: string) {
    super(412, 'no_writable_node', `lifting read-only mode is refused: ${reason}; nothing was changed`);
  }
}

export const auditQuery = z.strictObject({ limit: wholeNumberParam(1, 1000, 50) });

export interface AdminDeps {
  dr: DrStateService;
  readOnly: ReadOnlyService;
  audit: AuditLog;
  /** Why writes are refused now (null: open), for the state document. */
  writes?: () => unknown;
  /** Live facts other capabilities add to the state document (the database pair's roles and lag). */
  details?: StateDetails;
  /** Why no configured database node takes writes now (fresh probes), or null: a lift is then refused. */
  noWritableNode?: () => Promise<string | null>;
}

export interface StateDetails {
  database?: () => Promise<Record<string, unknown> | undefined>;
}

/** DR state, read-only mode and audit routes; authentication is applied by the caller. */
export function adminRoutes(deps: AdminDeps): Router {
  const router = Router();

  router.get('/admin/dr/state', async (_req, res) => {
    const state = deps.dr.current();
    // Reading the heartbeats is also a live check of the state store.
    const [instances, pair] = await Promise.all([deps.dr.instances().catch(() => null), deps.details?.database?.().catch(() => undefined)]);
    res.json({
      ...state,
      readOnly: { ...state.readOnly, ...deps.readOnly.expiryFacts(), active: deps.readOnly.isActive() },
      database: pair ? { ...state.database, ...pair } : state.database,
      instances,
      stateStore: instances === null ? 'down' : 'up',
      stateSource: deps.dr.stateSource(),
      stateLost: deps.dr.lost(),
      lease: deps.dr.lease(),
      writes: deps.writes?.() ?? null,
    });
  });

  router.get('/admin/read-only', (_req, res) => {
    res.json(deps.readOnly.status());
  });

  router.put('/admin/read-only', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'read_only.set', async () => {
      const input = parseOrThrow(readOnlyBody, req.body, 'invalid read-only request');
      if (!input.enabled && input.ttlSeconds !== undefined)
        parseOrThrow(z.object({ ttlSeconds: z.undefined({ error: 'only with enabled: true' }) }), input);
      // Lifting the mode with no node taking writes would turn every write into a failure (or worse).
      let guard: ((current: DrState) => void) | undefined;
      if (!input.enabled && deps.noWritableNode) {
        const checked = JSON.stringify(deps.dr.current().database);
        const blocked = await deps.noWritableNode();
        if (blocked) throw new NoWritableNodeError(blocked);
        // The check holds for the database state it saw: a switch or promotion stored meanwhile
        // (also one this instance has not applied yet) makes the lift a 409, never a lift onto it.
        guard = (current) => {
          if (JSON.stringify(current.database) !== checked)
            throw new ConflictError('the database state changed while the lift was checked; nothing was changed: check it and try again', {
              current,
            });
        };
      }
      const change = await deps.readOnly.set(input, principal(res).name, guard).catch(async (err: unknown) => {
        // Refused by the guard: follow the newest state now, so a retry checks the state it would replace.
        if (err instanceof ConflictError) await deps.dr.sync().catch(() => undefined);
        throw err;
      });
      const propagation = await confirmedPropagation(deps.dr, change.after.version, { readOnly: change.after.readOnly });
      const writes = { ...barrierSummary(change.after.version, propagation.instances), ...fenceSummary(change.fence) };
      return {
        before: change.before.readOnly,
        after: change.after.readOnly,
        detail: { version: change.after.version, writes },
        body: { readOnly: change.after.readOnly, version: change.after.version, propagation, writes },
      };
    });
    res.json(body);
  });

  router.get('/admin/audit', async (req, res) => {
    const { limit } = parseOrThrow(auditQuery, req.query, 'invalid query');
    const [events, pending] = await Promise.all([
      deps.audit.recent(limit).catch((err: unknown) => {
        throw new DependencyUnavailableError(
          'database',
          'the audit log could not be read; events are spooled until PostgreSQL returns',
          err,
        );
      }),
      deps.audit.pending(),
    ]);
    res.json({ events, pending });
  });

  return router;
}
