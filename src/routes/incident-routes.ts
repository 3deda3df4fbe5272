import { Router } from 'express';
import { z } from 'zod';
import { audited } from '../admin/audited.ts';
import { principal } from '../admin/admin-auth.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import { NotFoundError } from '../http/app-error.ts';
import { dependencyErrors } from '../http/dependency-errors.ts';
import { parseOrThrow, wholeNumberParam } from '../http/validate.ts';
import type { Assessment } from '../services/incidents/incident-assessor.ts';
import type { EventHub } from '../services/incidents/event-hub.ts';
import { COMPONENTS, responseFacts, ROLES, SEVERITIES, STATUSES, type Incident } from '../services/incidents/incident-model.ts';
import type { IncidentService } from '../services/incidents/incident-service.ts';
import type { IncidentStore } from '../services/incidents/incident-store.ts';
import { renderPostmortem } from '../services/incidents/postmortem.ts';
import { multiLineProblem, singleLineProblem } from '../services/incidents/incident-text.ts';
import type { SseStreams } from '../http/sse.ts';

const text = (max: number) => z.string().trim().min(1, { error: 'must not be empty' }).max(max);
/** A title or ETA: one line (a notification's subject), no control or BiDi characters. */
const line = (max: number) =>
  text(max).superRefine((v, ctx) => {
    const problem = singleLineProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
/** A summary, message or root cause: line breaks and tabs allowed, no other control or BiDi characters. */
const block = (max: number) =>
  text(max).superRefine((v, ctx) => {
    const problem = multiLineProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
const ID = /^INC-\d{8}-\d{1,9}$/;

/** Incident roles, each an admin token name (none required). */
const roleNames = z.strictObject(
  Object.fromEntries(
    ROLES.map((r) => [
      r,
      z
        .string()
        .regex(/^[A-Za-z0-9._-]{1,64}$/, { error: 'must be an admin token name' })
        .optional(),
    ]),
  ) as Record<(typeof ROLES)[number], z.ZodOptional<z.ZodString>>,
);

export const createBody = z.strictObject({
  severity: z.enum(SEVERITIES, { error: 'must be P0, P1, P2 or P3' }),
  title: line(200),
  summary: block(2000),
  components: z
    .array(z.enum(COMPONENTS, { error: `must be one of ${COMPONENTS.join(', ')}` }))
    .max(COMPONENTS.length)
    .refine((c) => new Set(c).size === c.length, { error: 'must not repeat a component' })
    .default([]),
  eta: line(200).optional(),
  startedAt: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 time' }).optional(),
  roles: roleNames.optional(),
});

export const updateBody = z.strictObject({
  message: block(2000),
  // Updates are for communication: public unless marked internal.
  visibility: z.enum(['public', 'internal'], { error: 'must be public or internal' }).default('public'),
  status: z.enum(STATUSES, { error: `must be one of ${STATUSES.join(', ')}` }).optional(),
  eta: line(200).optional(),
  rootCause: block(2000).optional(),
});

export const rolesBody = roleNames.refine((r) => Object.values(r).some((v) => v !== undefined), { error: 'name at least one role' });

export const listQuery = z.strictObject({
  status: z.preprocess(
    (v) => (v === '' ? undefined : v),
    z.enum([...STATUSES, 'open'], { error: `must be one of ${STATUSES.join(', ')}, open` }).optional(),
  ),
  limit: wholeNumberParam(1, 1000, 100),
});
export const eventsQuery = z.strictObject({ incidentId: z.string().regex(ID, { error: 'must be an incident id' }).optional() });

export interface IncidentRouteDeps {
  incidents: IncidentService;
  store: IncidentStore;
  audit: AuditLog;
  assess: () => Promise<Assessment>;
  hub: EventHub;
  streams: SseStreams;
}

function view(incident: Incident) {
  return { ...incident, ...responseFacts(incident, Date.now()) };
}

function incidentId(raw: unknown): string {
  const id = String(raw);
  if (!ID.test(id)) throw new NotFoundError(`no incident ${id.slice(0, 40)}`);
  return id;
}

/** The incident API for operators (authentication is applied by the caller). */
export function incidentRoutes(deps: IncidentRouteDeps): Router {
  const router = Router();

  router.post('/admin/incidents/assess', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'incident.assess', async () => {
      const result = await deps.assess();
      return { body: result, detail: { severity: result.severity, rule: result.rule } };
    });
    res.json(body);
  });

  router.post('/admin/incidents', async (req, res) => {
    const body = await audited(deps.audit, req, res, 'incident.create', async () => {
      const { roles, ...input } = parseOrThrow(createBody, req.body, 'invalid incident');
      const named = Object.fromEntries(Object.entries(roles ?? {}).filter(([, v]) => v !== undefined)) as Record<string, string>;
      const { incident, initialNotification } = await deps.incidents.create({ ...input, roles: named }, principal(res).name);
      return {
        body: { ...view(incident), initialNotification },
        after: { id: incident.id, severity: incident.severity, status: incident.status },
      };
    });
    res.status(201).location(`/admin/incidents/${body.id}`).json(body);
  });

  router.get('/admin/incidents', async (req, res) => {
    const { status, limit } = parseOrThrow(listQuery, req.query, 'invalid query');
    const incidents = await deps.incidents.list(status, limit);
    res.json({ incidents: incidents.map(view) });
  });

  router.get('/admin/incidents/:id', async (req, res) => {
    const incident = await deps.incidents.get(incidentId(req.params.id));
    res.json({ ...view(incident), timeline: await deps.store.timeline(incident.id) });
  });

  router.post('/admin/incidents/:id/updates', async (req, res) => {
    const id = incidentId(req.params.id);
    const body = await audited(deps.audit, req, res, 'incident.update', async () => {
      const input = parseOrThrow(updateBody, req.body, 'invalid incident update');
      const before = await deps.incidents.get(id);
      const incident = await deps.incidents.update(id, input, principal(res).name);
      return {
        body: view(incident),
        before: { id, status: before.status },
        after: { id, status: incident.status, visibility: input.visibility },
      };
    });
    res.status(201).json(body);
  });

  router.post('/admin/incidents/:id/acknowledge', async (req, res) => {
    const id = incidentId(req.params.id);
    const body = await audited(deps.audit, req, res, 'incident.acknowledge', async () => {
      const incident = await deps.incidents.acknowledge(id, principal(res).name);
      return { body: view(incident), after: { id, acknowledgedAt: incident.acknowledgedAt, acknowledgedBy: incident.acknowledgedBy } };
    });
    res.json(body);
  });

  router.put('/admin/incidents/:id/roles', async (req, res) => {
    const id = incidentId(req.params.id);
    const body = await audited(deps.audit, req, res, 'incident.roles', async () => {
      const roles = parseOrThrow(rolesBody, req.body, 'invalid roles');
      const clean = Object.fromEntries(Object.entries(roles).filter(([, v]) => v !== undefined)) as Record<string, string>;
      const incident = await deps.incidents.assignRoles(id, clean, principal(res).name);
      return { body: view(incident), after: { id, roles: incident.roles } };
    });
    res.json(body);
  });

  router.get('/admin/incidents/:id/postmortem', async (req, res) => {
    const incident = await deps.incidents.get(incidentId(req.params.id));
    const markdown = renderPostmortem(incident, await deps.store.timeline(incident.id));
    res.type('text/markdown; charset=utf-8').send(markdown);
  });

  /** Live follow for operators: DR state, jobs, health transitions, incident changes. */
  router.get('/admin/events', (req, res) => {
    const { incidentId: only } = parseOrThrow(eventsQuery, req.query, 'invalid query');
    const stream = deps.streams.start(req, res);
    stream.send('hello', { at: new Date().toISOString(), incidentId: only ?? null });
    const unsubscribe = deps.hub.subscribe((event) => {
      if (only && event.incidentId !== undefined && event.incidentId !== only) return;
      stream.send(event.type, event);
    });
    stream.onClose(unsubscribe);
  });

  // Anything not already an answer here comes from the incident store: PostgreSQL is unavailable.
  router.use('/admin/incidents', dependencyErrors('database', 'the incident store (PostgreSQL) is unavailable; try again'));

  return router;
}
