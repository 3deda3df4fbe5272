import { Router } from 'express';
import { z } from 'zod';
import { audited } from '../admin/audited.ts';
import { principal } from '../admin/admin-auth.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import { BadRequestError } from '../http/app-error.ts';
import { busyJobAsConflict, jobHref, withJobHref } from '../http/job-link.ts';
import { parseOrThrow, wholeNumberParam } from '../http/validate.ts';
import type { BackupInventory } from '../services/backup/backup-inventory.ts';
import type { BackupService } from '../services/backup/backup-service.ts';
import { RESTORE_POINT_NAME } from '../services/backup/restore-point.ts';
import { RESTORE_ACTION, reportAuditInput, reportEventId, reportProblem, restoreReportBody } from '../services/backup/restore-report.ts';
import type { RestoreLedger } from '../services/backup/restore-ledger.ts';
import type { PrismaValidationStore } from '../services/backup/validation-store.ts';

export const backupBody = z.strictObject({ type: z.enum(['full', 'diff', 'incr'], { error: 'must be "full", "diff" or "incr"' }) });
const label = z.string().regex(/^(latest|\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?)$/, { error: 'must be "latest" or a pgBackRest backup label' });
export const validateBody = z.strictObject({
  backup: label.optional(),
  targetTime: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 time with a zone, e.g. 2026-11-26T08:15:00Z' }).optional(),
});
export const validationsQuery = z.object({ limit: wholeNumberParam(1, 100, 20) });
export const restorePointBody = z.strictObject({
  name: z.string().regex(RESTORE_POINT_NAME, { error: 'must be 1-63 characters of A-Z a-z 0-9 . _ : -' }),
});

const jobBody = (job: { id: string; kind: string; status: string; input: unknown; createdAt: string }) => ({
  job: { id: job.id, kind: job.kind, status: job.status, input: job.input, createdAt: job.createdAt, href: jobHref(job.id) },
});

export function backupRoutes(deps: {
  inventory: BackupInventory;
  service: BackupService;
  validations: PrismaValidationStore;
  audit: AuditLog;
  restores: RestoreLedger;
}): Router {
  const router = Router();

  router.get('/admin/backups', async (_req, res) => {
    const [inventory, workers, running] = await Promise.all([
      deps.inventory.inventory(),
      deps.service.workers(),
      deps.service.runningBackup(),
    ]);
    res.json({ ...inventory, workers, running: running ? withJobHref(running) : (running ?? null) });
  });

  router.post('/admin/backups', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'backup.start', async () => {
      const input = parseOrThrow(backupBody, req.body, 'invalid backup request');
      const job = await busyJobAsConflict(() => deps.service.requestBackup(input, principal(res).name));
      return { body: jobBody(job), detail: { jobId: job.id, type: input.type } };
    });
    res.status(202).json(body);
  });

  router.post('/admin/backups/validate', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'backup.validate', async () => {
      const input = parseOrThrow(validateBody, req.body ?? {}, 'invalid validation request');
      const job = await busyJobAsConflict(() => deps.service.requestValidation(input, principal(res).name));
      return { body: jobBody(job), detail: { jobId: job.id, ...job.input } };
    });
    res.status(202).json(body);
  });

  router.get('/admin/backups/validations', async (req, res) => {
    const { limit } = parseOrThrow(validationsQuery, req.query, 'invalid query');
    res.json({ validations: await deps.validations.recent(limit) });
  });

  router.post('/admin/database/restore-point', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'database.restore_point', async () => {
      const { name } = parseOrThrow(restorePointBody, req.body, 'invalid restore point request');
      const point = await deps.service.restorePoint(name, principal(res).name);
      return { body: { restorePoint: point }, detail: { restorePoint: point } };
    });
    res.status(201).json(body);
  });

  // The restore tool on the database host reports its start, each step and its outcome: each
  // becomes an audited action at the time it happened (joining the timeline of incidents open
  // then). Recorded once per report (a resend is the same event); while PostgreSQL is down (the
  // restore stopped it) the event waits in the audit spool, and is written when it is back.
  router.post('/admin/database/restores', async (req, res) => {
    const report = parseOrThrow(restoreReportBody, req.body, 'invalid restore report');
    const problem = reportProblem(report);
    if (problem) throw new BadRequestError('invalid restore report', { at: [problem] });
    const id = reportEventId(report);
    const { recorded, replayed } = await deps.restores.accept(report);
    if (!replayed) {
      const admin = principal(res);
      await deps.audit.record(reportAuditInput(report, admin, req.id === undefined ? null : String(req.id)), {
        id,
        at: new Date(report.at),
      });
    }
    res.status(201).json({
      event: { id, action: RESTORE_ACTION[recorded.event], result: recorded.result, at: recorded.at, durationMs: recorded.durationMs },
      ...(replayed ? { replayed: true } : {}),
    });
  });

  return router;
}
