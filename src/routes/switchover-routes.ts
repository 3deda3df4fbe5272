import { Router } from 'express';
import { z } from 'zod';
import { audited } from '../admin/audited.ts';
import { principal } from '../admin/admin-auth.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import { parseOrThrow } from '../http/validate.ts';
import type { SwitchoverService } from '../services/database/switchover-service.ts';

export const switchoverBody = z.strictObject({
  to: z.enum(['primary', 'replica'], { error: 'must be "primary" or "replica"' }),
  confirm: z.literal('switchover', { error: 'must be "switchover"' }),
  dryRun: z.boolean().default(false),
  maxLagBytes: z
    .number()
    .int()
    .min(0)
    .max(1024 ** 3)
    .optional(),
});

/** POST /admin/database/switchover: the planned switchover with zero loss. */
export function switchoverRoutes(deps: { switchover: SwitchoverService; audit: AuditLog; afterChange: () => void }): Router {
  const router = Router();
  router.post('/admin/database/switchover', async (req, res) => {
    try {
      const body = await audited(deps.audit, req, res, 'database.switchover', async () => {
        const input = parseOrThrow(switchoverBody, req.body, 'invalid switchover request');
        const result = await deps.switchover.switchover(input, principal(res).name);
        return { body: result, result: input.dryRun ? 'dry_run' : 'success', detail: result };
      });
      res.json(body);
    } finally {
      deps.afterChange();
    }
  });
  return router;
}
