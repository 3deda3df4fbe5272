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
import { alertTimes, severityFromLabel, type Component } from '../services/incidents/incident-model.ts';
import type { NewEntry } from '../services/incidents/incident-store.ts';
import type { AlertIntake } from '../services/incidents/alert-intake.ts';
import { oneLine, stripControls } from '../services/incidents/incident-text.ts';

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

type Alert = z.output<typeof alert>;

/**
 * Label and annotation texts as shown to people (terminal, chat, post-mortem, status page): no
 * control characters, line breaks or BiDi controls in labels, none but line breaks in
 * annotations. Replaced, not refused: a 400 would lose the whole group.
 */
function cleanAlert(a: Alert): Alert {
  const labels = Object.fromEntries(Object.entries(a.labels).map(([k, v]) => [oneLine(k), oneLine(v)]));
  const annotations = Object.fromEntries(Object.entries(a.annotations).map(([k, v]) => [oneLine(k), stripControls(v)]));
  return { ...a, labels, annotations };
}

function componentsOf(a: Alert): Component[] {
  const named = a.labels.component;
  if (named === 'api' || named === 'database' || named === 'media-uploads' || named === 'media-downloads') return [named];
  const name = `${a.labels.alertname} ${a.labels.job ?? ''}`;
  if (/database|postgres|replica|replication|backup/i.test(name)) return ['database'];
  if (/media|minio|s3|storage/i.test(name)) return ['media-uploads', 'media-downloads'];
  if (/api|service|health/i.test(name)) return ['api'];
  return [];
}

function fingerprint(a: Alert): string {
  if (a.fingerprint) return a.fingerprint;
  const sorted = Object.keys(a.labels)
    .sort()
    .map((k) => `${k}=${a.labels[k]}`)
    .join(',');
  return createHash('sha256').update(sorted).digest('hex').slice(0, 16);
}

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
  // The issue's contract for this route: an oversized payload is a 400 (a bad payload that
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
      const seen = (id: string) => {
        if (!result.incidents.includes(id)) result.incidents.push(id);
      };
      // An alert's entries are deduplicated per group: the same alert routed into two groups
      // (two routes with different group_by) belongs to each group's incident.
      const group = createHash('sha256').update(input.groupKey).digest('hex').slice(0, 16);
      for (const a of input.alerts.map(cleanAlert)) {
        const name = a.labels.alertname ?? '';
        const fp = fingerprint(a);
        const times = alertTimes(a, receivedAt);
        if (times.notes.length > 0) result.clamped += 1;
        const detail = {
          labels: a.labels,
          annotations: a.annotations,
          fingerprint: fp,
          startsAt: a.startsAt,
          endsAt: a.endsAt ?? null,
          ...(times.notes.length > 0 ? { clamped: times.notes } : {}),
        };
        const recovery = (endsAt: Date, d: unknown): NewEntry => ({
          at: endsAt,
          kind: 'alert',
          visibility: 'public',
          message: `Monitoring reports that ${name} has recovered.`,
          author: 'alertmanager',
          detail: d,
          dedupeKey: `alert:${group}:${fp}:${a.startsAt}:resolved`,
        });
        if (a.status === 'firing') {
          const severity = severityFromLabel(a.labels.severity);
          // Its resolution may have been delivered first (or alone): then this opens nothing.
          const resolution = await deps.alerts.resolutionOf(fp, a.startsAt, times.startsAt);
          const out = await deps.alerts.openOrJoin(
            input.groupKey,
            {
              title: `Alert: ${name}`.slice(0, 200),
              summary: `Monitoring detected a problem (${name}); we are investigating.`,
              severity,
              components: componentsOf(a),
            },
            {
              at: times.startsAt,
              kind: 'alert',
              visibility: 'internal',
              message: `firing: ${name} (${severity})${a.annotations.summary ? `: ${a.annotations.summary}` : ''}${times.notes.length > 0 ? ` [${times.notes.join('; ')}]` : ''}`,
              author: 'alertmanager',
              detail,
              dedupeKey: `alert:${group}:${fp}:${a.startsAt}:firing`,
            },
            resolution ? recovery(resolution.endsAt, resolution.detail) : undefined,
            // Keys written before they named the group (this alert's entry from an earlier release).
            `alert:${fp}:${a.startsAt}:firing`,
          );
          if (out.incident) seen(out.incident.id);
          if (out.opened) result.opened += 1;
          else if (out.added) result.joined += 1;
          else if (!out.incident) result.alreadyResolved += 1;
          else result.duplicates += 1;
        } else {
          const endsAt = times.endsAt ?? receivedAt;
          const incident = await deps.alerts.resolve(
            { fingerprint: fp, startsAt: a.startsAt, endsAt, groupKey: input.groupKey, alertname: name, detail },
            recovery(endsAt, detail),
            `alert:${fp}:${a.startsAt}:resolved`,
          );
          if (incident) seen(incident.id);
          result.resolved += 1;
        }
      }
      res.json(result);
    },
  );
  // A store failure is a 503: Alertmanager retries server errors, and the dedupe keys make the retry safe.
  router.use('/admin/incidents/alerts', dependencyErrors('database', 'the incident store (PostgreSQL) is unavailable; retry'));

  return router;
}
