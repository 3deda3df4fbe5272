import { createHash, timingSafeEqual } from 'node:crypto';
import express, { Router, type ErrorRequestHandler } from 'express';
import { bodyError, jsonBody } from '../http/json-body.ts';
import { z } from 'zod';
import { AppError } from '../http/app-error.ts';
import { bearerToken } from '../http/bearer.ts';
import { throwIfThrottled } from '../admin/admin-auth.ts';
import { FailedAuthLimiter } from '../admin/failed-auth-limiter.ts';
import { dependencyErrors } from '../http/dependency-errors.ts';
import { parseOrThrow } from '../http/validate.ts';
import type { Logger } from '../logger.ts';
import type { AlertIntake, AlertOutcome } from '../services/incidents/alert-intake.ts';

/** Alertmanager sends whole groups; anything beyond this is not a sane alert group. */
export const ALERT_BODY_LIMIT = '256kb';
const MAX_ALERTS = 500;

const labels = z.record(z.string().max(256), z.string().max(4096));
const alert = z.looseObject({
  status: z.enum(['firing', 'resolved']),
  labels: labels.refine((l) => typeof l.alertname === 'string' && l.alertname.length > 0, { error: 'must have an alertname' }),
  annotations: labels.default({}),
  // Bounded: with the fingerprint it makes the (indexed) dedupe key of the alert's entries.
  startsAt: z.iso.datetime({ offset: true, error: 'must be an RFC 3339 time' }).max(64),
  endsAt: z.string().max(64).optional(),
  generatorURL: z.string().max(4096).optional(),
  fingerprint: z.string().max(128).optional(),
});
export const payload = z.looseObject({
  version: z.literal('4', { error: 'must be "4" (Alertmanager webhook version 4)' }),
  groupKey: z.string().min(1).max(4096),
  status: z.enum(['firing', 'resolved']),
  receiver: z.string().max(256).optional(),
  groupLabels: labels.default({}),
  commonLabels: labels.default({}),
  commonAnnotations: labels.default({}),
  alerts: z.array(alert).min(1).max(MAX_ALERTS),
});

/** Which count of the answer each alert's outcome adds to. */
const COUNTED_AS = {
  opened: 'opened',
  joined: 'joined',
  duplicate: 'duplicates',
  already_resolved: 'alreadyResolved',
  resolved: 'resolved',
} as const satisfies Record<AlertOutcome['outcome'], string>;

/**
 * POST /admin/incidents/alerts: Alertmanager's webhook, with its own bearer token (not an admin
 * token). Wrong tokens back off like the admin API's: after repeated failures from an address,
 * further failures are 429 with Retry-After (the right token always passes).
 */
export function alertWebhookRoutes(deps: { alerts: AlertIntake; token?: string; logger: Logger; limiter?: FailedAuthLimiter }): Router {
  const router = Router();
  const expected = deps.token === undefined ? undefined : createHash('sha256').update(deps.token).digest();
  const limiter = deps.limiter ?? new FailedAuthLimiter();

  const authenticate: express.RequestHandler = (req, _res, next) => {
    const presented = bearerToken(req);
    // Digests have one length, so the comparison takes the same time whatever was presented.
    const ok =
      expected !== undefined && presented !== undefined && timingSafeEqual(createHash('sha256').update(presented).digest(), expected);
    if (!ok) {
      const address = req.ip ?? 'unknown';
      throwIfThrottled(limiter, address);
      limiter.fail(address);
      deps.logger.warn(
        { configured: expected !== undefined, tokenPresented: presented !== undefined },
        'alert webhook: authentication failed',
      );
      const err = new AppError(
        401,
        'unauthorized',
        expected === undefined ? 'the alert webhook is not configured (ALERTMANAGER_WEBHOOK_TOKEN)' : 'the token is not valid',
      );
      err.headers['WWW-Authenticate'] = 'Bearer realm="sav3-alerts"';
      throw err;
    }
    next();
  };
  // The contract for this route: an oversized payload is a 400 (a bad payload that
  // Alertmanager should not retry), not the generic 413. Every other unreadable body keeps its
  // answer from jsonBody (400, or 415 for an encoding or charset it cannot decode): never the 503
  // of the store below.
  const bodyErrors: ErrorRequestHandler = (err, _req, _res, next) => {
    const unreadable = bodyError(err);
    if (unreadable?.status === 413)
      next(new AppError(400, 'bad_request', `the alert payload is larger than ${ALERT_BODY_LIMIT}`, { reason: 'too_large' }));
    else next(unreadable ?? err);
  };

  router.post(
    '/admin/incidents/alerts',
    authenticate,
    jsonBody({ limit: ALERT_BODY_LIMIT, type: () => true }),
    bodyErrors,
    async (req: express.Request, res: express.Response) => {
      const input = parseOrThrow(payload, req.body, 'invalid Alertmanager payload');
      const receivedAt = new Date();
      const result = { incidents: [] as string[], opened: 0, joined: 0, duplicates: 0, resolved: 0, alreadyResolved: 0, clamped: 0 };
      for (const a of input.alerts) {
        const out = await deps.alerts.handle(a, input.groupKey, receivedAt);
        if (out.clamped) result.clamped += 1;
        if (out.incidentId !== undefined && !result.incidents.includes(out.incidentId)) result.incidents.push(out.incidentId);
        result[COUNTED_AS[out.outcome]] += 1;
      }
      res.json(result);
    },
  );
  // A store failure is a 503: Alertmanager retries server errors, and the dedupe keys make the retry safe.
  router.use('/admin/incidents/alerts', dependencyErrors('database', 'the incident store (PostgreSQL) is unavailable; retry'));

  return router;
}
