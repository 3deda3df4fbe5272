import { Router } from 'express';
import { z } from 'zod';
import type { AuditLog } from '../services/audit/audit-log.ts';
import { audited, barrierSummary, confirmedPropagation, fenceSummary, stateChangeOutcome } from '../admin/audited.ts';
import { principal } from '../admin/admin-auth.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import { parseOrThrow } from '../http/validate.ts';
import type { DatabaseFailoverService } from '../services/database/database-failover-service.ts';
import type { DatabaseVerifier } from '../services/database/database-verifier.ts';

export const promoteBody = z.strictObject({
  confirm: z.literal('promote-replica', { error: 'must be "promote-replica"' }),
  dryRun: z.boolean().default(false),
  maxLagSeconds: z.number().min(0).max(86_400).optional(),
});

export const resetBody = z.strictObject({
  confirm: z.literal('reset-dr-state', { error: 'must be "reset-dr-state"' }),
  reason: z.string().trim().min(1, { error: 'must say why' }).max(500),
  database: z.enum(['primary', 'replica'], { error: 'must be "primary" or "replica"' }).default('primary'),
  /** The media backend after the reset; default: the current one. */
  media: z.enum(['primary', 'backup'], { error: 'must be "primary" or "backup"' }).optional(),
  /** The DR state version the operator saw (GET /admin/dr/state): 409 when it changed since. Default: the version when the reset starts. */
  expectVersion: z.number().int().min(0).optional(),
  /** Reset onto a node behind the newest timeline recorded (its newer timeline's data is given up). */
  acceptOlderTimeline: z.boolean().optional(),
});

export const switchBody = z.strictObject({
  to: z.enum(['primary', 'replica'], { error: 'must be "primary" or "replica"' }),
  dryRun: z.boolean().default(false),
});

export function databaseRoutes(deps: {
  failover: DatabaseFailoverService;
  verifier: DatabaseVerifier;
  dr: DrStateService;
  audit: AuditLog;
}): Router {
  const router = Router();

  router.post('/admin/database/promote', async (req, res) => {
    const body = await audited<Record<string, unknown>>(deps.audit, req, res, 'database.promote', async () => {
      const input = parseOrThrow(promoteBody, req.body, 'invalid promote request');
      const outcome = await deps.failover.promote(input);
      // Only a promotion that happened carries the change that recorded it.
      if (!('recordedChange' in outcome)) return { body: outcome, result: input.dryRun ? 'dry_run' : 'success', detail: outcome };
      const { recordedChange, ...result } = outcome;
      // The promotion recorded the node's identity and timeline (its own change, even if another
      // one came after it): answer once every live instance follows it.
      const version = recordedChange?.after.version ?? deps.dr.current().version;
      const propagation = await confirmedPropagation(deps.dr, version, { promoted: true, node: result.node });
      const writes = fenceSummary(recordedChange?.fence);
      return { body: { ...result, version, propagation, writes }, result: 'success', detail: { ...result, version, writes } };
    });
    res.json(body);
  });

  router.post('/admin/database/switch', async (req, res) => {
    const body = await audited<Record<string, unknown>>(deps.audit, req, res, 'database.switch', async () => {
      const input = parseOrThrow(switchBody, req.body, 'invalid switch request');
      const result = await deps.failover.switchDatabase(input, principal(res).name);
      return stateChangeOutcome(deps.dr, result, 'database', input.dryRun);
    });
    res.json(body);
  });

  // A state that does not match the configured nodes (e.g. left in Redis by an earlier cluster)
  // needs an operator: this puts back the initial state, recording the nodes configured now.
  router.post('/admin/dr/state/reset', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'dr_state.reset', async () => {
      const input = parseOrThrow(resetBody, req.body, 'invalid reset request');
      const change = await deps.failover.resetState(principal(res).name, input.reason, input.database, {
        ...(input.media ? { media: input.media } : {}),
        ...(input.expectVersion !== undefined ? { expectVersion: input.expectVersion } : {}),
        ...(input.acceptOlderTimeline ? { acceptOlderTimeline: true } : {}),
      });
      const version = change.after.version;
      const propagation = await confirmedPropagation(deps.dr, version, { reset: true });
      const writes = { ...barrierSummary(version, propagation.instances), ...fenceSummary(change.fence) };
      return {
        before: change.before,
        after: change.after,
        detail: { reason: input.reason, database: input.database, media: change.after.media.active, version, writes },
        body: { version, state: change.after, propagation, writes },
      };
    });
    res.json(body);
  });

  router.post('/admin/verify/database', async (req, res) => {
    const report = await audited(deps.audit, req, res, 'verify.database', async () => {
      const result = await deps.verifier.verify();
      return { body: result, detail: result, result: 'success' };
    });
    res.status(report.status === 'pass' ? 200 : 503).json({ ...report, timestamp: new Date().toISOString() });
  });

  return router;
}
