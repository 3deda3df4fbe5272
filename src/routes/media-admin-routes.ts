import { Router } from 'express';
import { z } from 'zod';
import { audited, stateChangeOutcome } from '../admin/audited.ts';
import { principal } from '../admin/admin-auth.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import { BadRequestError } from '../http/app-error.ts';
import { withJobHref } from '../http/job-link.ts';
import { parseOrThrow } from '../http/validate.ts';
import type { MediaConsistencyChecker } from '../services/media/media-consistency.ts';
import type { MediaFailoverService } from '../services/media/media-failover-service.ts';
import type { MediaSyncService } from '../services/media/media-sync.ts';
import { errorMessage } from '../lib/error-message.ts';

const backend = z.enum(['primary', 'backup'], { error: 'must be "primary" or "backup"' });
export const switchBody = z.strictObject({ to: backend, dryRun: z.boolean().default(false), force: z.boolean().default(false) });
export const syncBody = z.strictObject({ from: backend, to: backend, dryRun: z.boolean().default(false) });
/** POST /admin/verify/media: `deep` reads and hashes every current version (default: sizes only). */
export const verifyMediaBody = z.strictObject({ deep: z.boolean().default(false) });

export function mediaAdminRoutes(deps: {
  failover: MediaFailoverService;
  sync: MediaSyncService;
  consistency: MediaConsistencyChecker;
  dr: DrStateService;
  audit: AuditLog;
}): Router {
  const router = Router();

  router.post('/admin/media/switch', async (req, res) => {
    const body = await audited<Record<string, unknown>>(deps.audit, req, res, 'media.switch', async () => {
      const input = parseOrThrow(switchBody, req.body, 'invalid media switch request');
      const result = await deps.failover.switchBackend(input, principal(res).name);
      return stateChangeOutcome(deps.dr, result, 'media', input.dryRun);
    });
    res.json(body);
  });

  router.post('/admin/media/sync', async (req, res) => {
    const body = await audited<Record<string, unknown>>(deps.audit, req, res, 'media.sync', async () => {
      const input = parseOrThrow(syncBody, req.body, 'invalid media sync request');
      if (input.from === input.to) throw new BadRequestError('from and to must differ', { to: ['must differ from from'] });
      for (const field of ['from', 'to'] as const) {
        if (!deps.sync.configured(input[field]))
          throw new BadRequestError(`media backend ${input[field]} is not configured`, { [field]: ['not configured'] });
      }
      const result = withJobHref(await deps.sync.sync(input));
      return { body: result, result: input.dryRun ? 'dry_run' : 'success', detail: { ...result, items: undefined } };
    });
    res.status(body.async === true ? 202 : 200).json(body);
  });

  router.post('/admin/verify/media', async (req, res) => {
    const report = await audited(deps.audit, req, res, 'verify.media', async () => {
      const input = parseOrThrow(verifyMediaBody, req.body ?? {}, 'invalid media verify request');
      const canaries = await deps.failover.verify();
      // Metadata against content on each backend, and orphans; a job when the store is large.
      const consistency = await deps.consistency
        .start({ deep: input.deep })
        .then(withJobHref, (err: unknown) => ({ status: 'fail' as const, error: errorMessage(err) }));
      const pass = 'status' in consistency ? consistency.status : 'pass';
      const status =
        canaries.status === 'fail' || pass === 'fail'
          ? 'fail'
          : canaries.status === 'degraded' || pass === 'degraded'
            ? 'degraded'
            : 'pass';
      const result = { ...canaries, status, consistency };
      return { body: result, detail: { ...result, consistency: { ...consistency, problems: undefined } } };
    });
    res.status(report.status === 'fail' ? 503 : 200).json({ ...report, timestamp: new Date().toISOString() });
  });

  return router;
}
