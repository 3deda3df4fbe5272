import { z } from 'zod';
import { auditQuery, readOnlyBody } from './admin-routes.ts';
import { backupBody, restorePointBody, validateBody, validationsQuery } from './backup-routes.ts';
import { restoreReportBody } from '../services/backup/restore-report.ts';
import { promoteBody, resetBody, switchBody as databaseSwitchBody } from './database-routes.ts';
import { switchoverBody } from './switchover-routes.ts';
import { payload as alertmanagerPayload } from './alert-webhook-routes.ts';
import { createBody, eventsQuery, listQuery, rolesBody, updateBody } from './incident-routes.ts';
import { switchBody as mediaSwitchBody, syncBody, verifyMediaBody } from './media-admin-routes.ts';
import { jobParams } from './job-routes.ts';
import { listQuerySchema as mediaListQuery } from './media-routes.ts';
import { mediaKeySchema } from '../services/media/media-key.ts';

/**
 * Every route the API app mounts, for the OpenAPI document (openapi.ts): Express paths exactly as
 * mounted, the zod schemas the route validates with, and the main answers. A route added to a
 * router and not here fails test/integration/openapi.test.ts.
 */

export type Method = 'get' | 'head' | 'put' | 'post' | 'delete';
/** Who may call: no authentication, an admin token of that role, or Alertmanager's own token. */
export type Access = 'public' | 'viewer' | 'operator' | 'alertmanager';
export type Schema = z.ZodType | JsonSchema;
export type JsonSchema = { [key: string]: unknown };

export interface Answer {
  description: string;
  schema?: Schema;
  /** Default application/json. */
  contentType?: string;
  headers?: Record<string, string>;
}

export interface RouteDoc {
  method: Method;
  /** The Express path as mounted: `/admin/incidents/:id`, `/media/*key`. */
  path: string;
  tag: string;
  summary: string;
  description?: string;
  access: Access;
  body?: { schema: Schema; contentType?: string; required?: boolean };
  query?: z.ZodObject;
  params?: z.ZodObject;
  responses: Record<number, Answer>;
  /** Further error statuses this route answers (besides the ones its access and input imply). */
  errors?: number[];
  /** Outside the contract, kept for operators' tools. */
  extension?: boolean;
}

// ---- Response shapes (the contract's fields; `looseObject`: answers may carry more) ----

const status = z.enum(['healthy', 'degraded', 'unhealthy']);
const isoTime = z.iso.datetime({ offset: true });
const componentError = z.looseObject({
  code: z.enum(['timeout', 'connection_refused', 'auth_failed', 'not_found', 'unknown']),
  message: z.string().optional(),
});
const health = <T extends z.ZodRawShape>(shape: T) =>
  z.looseObject({ status, timestamp: isoTime, error: componentError.optional(), ...shape });
const component = z.looseObject({
  status,
  latencyMs: z.number().optional(),
  checkedAt: isoTime.optional(),
  error: componentError.optional(),
});

const mediaObject = z.object({
  key: mediaKeySchema,
  size: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  contentType: z.string(),
  backend: z.enum(['primary', 'backup']),
  createdAt: isoTime,
});
const nullableTime = isoTime.nullable();
const readOnlyState = z.looseObject({
  enabled: z.boolean(),
  reason: z.string().nullable(),
  since: nullableTime,
  by: z.string().nullable(),
  expiresAt: nullableTime,
});
const targetState = (names: [string, ...string[]]) =>
  z.looseObject({ active: z.enum(names), since: nullableTime.optional(), by: z.string().nullable().optional() });
const drState = z.looseObject({
  version: z.number().int(),
  readOnly: readOnlyState,
  database: targetState(['primary', 'replica']),
  media: targetState(['primary', 'backup']),
  instances: z.array(z.looseObject({ id: z.string(), appliedVersion: z.number().int(), lastSeen: z.string() })).nullable(),
});
const report = z.looseObject({ status: z.enum(['pass', 'degraded', 'fail']), timestamp: isoTime });
const job = z.looseObject({ id: z.string(), kind: z.string(), status: z.string() });
const acceptedJob = z.object({
  job: z.looseObject({ id: z.string(), kind: z.string(), status: z.string(), createdAt: z.string(), href: z.string() }),
});
const anyJson = z.looseObject({});

/**
 * What a write-relevant change met: the instances' write barriers (inFlight, waitedFor, failing,
 * drained) and the database write fence (`databaseFence`: raised on every node taking writes,
 * partial, not_raised with `fenceReason`, or not_applicable).
 */
const writesSummary = z.looseObject({
  inFlight: z.number().int(),
  waitedFor: z.number().int(),
  failing: z.number().int(),
  drained: z.boolean(),
  instancesReporting: z.number().int(),
  databaseFence: z.enum(['raised', 'partial', 'not_raised', 'not_applicable']),
  fenceEpoch: z.number().int().optional(),
  fenceNodes: anyJson.optional(),
  fenceReason: z.string().optional(),
});
const incident = z.looseObject({
  id: z.string().regex(/^INC-\d{8}-\d{1,9}$/),
  severity: z.enum(['P0', 'P1', 'P2', 'P3']),
  status: z.string(),
  title: z.string(),
});
const sse = {
  description: 'a Server-Sent Events stream (text/event-stream) until the client disconnects',
  contentType: 'text/event-stream',
  schema: { type: 'string' },
};

/** The contract's error shape, everywhere. */
export const errorSchema = z.object({
  error: z.looseObject({
    code: z.string(),
    message: z.string(),
    requestId: z.string(),
    details: z.record(z.string(), z.array(z.string())).optional().describe('validation errors (400): messages per field'),
  }),
});

const json = (description: string, schema: Schema = anyJson): Answer => ({ description, schema });

/** One route: `route('post /admin/backups', 'backups', 'operator', 'request a backup', { body, responses, errors })`. */
function route(
  spec: `${Method} /${string}`,
  tag: string,
  access: Access,
  summary: string,
  rest: Omit<RouteDoc, 'method' | 'path' | 'tag' | 'access' | 'summary'>,
): RouteDoc {
  const [method, path] = spec.split(' ') as [Method, string];
  return { method, path, tag, summary, access, ...rest };
}

const healthAnswers = (schema: Schema) => ({ 200: json('healthy or degraded', schema), 503: json('unhealthy (same body)', schema) });

// ---- The routes ----

export const ROUTES: RouteDoc[] = [
  // Health (contract section 2): GET and HEAD, no authentication; a valid admin token adds raw error messages.
  ...(
    [
      ['/health/live', 'the process runs and is not shutting down', health({})],
      [
        '/health/ready',
        'this instance can serve (database answers, or read-only mode with a readable target)',
        health({ checks: z.record(z.string(), z.string()) }),
      ],
      [
        '/health/database',
        'the active database target answers SELECT 1',
        health({
          target: z.enum(['primary', 'replica']),
          inRecovery: z.boolean().optional(),
          latencyMs: z.number().optional(),
          checkedAt: isoTime.optional(),
          replication: anyJson.optional(),
        }),
      ],
      [
        '/health/media',
        'the active media backend answers a bucket check',
        health({
          backend: z.enum(['primary', 'backup']),
          bucket: z.string(),
          latencyMs: z.number().optional(),
          checkedAt: isoTime.optional(),
        }),
      ],
      ['/health/redis', 'Redis answers PING', health({ latencyMs: z.number().optional(), checkedAt: isoTime.optional() })],
      [
        '/health',
        'no critical component fails (the truth about writes)',
        health({
          components: z.looseObject({ database: component, media: component, redis: component }),
          readOnly: z.boolean(),
          stateVersion: z.number().int(),
        }),
      ],
    ] as const
  ).flatMap(([path, summary, schema]): RouteDoc[] =>
    (['get', 'head'] as const).map((method) => ({
      method,
      path,
      tag: 'health',
      summary,
      access: 'public',
      responses: healthAnswers(schema),
      errors: path === '/health/live' || path === '/health/ready' ? [] : [429],
    })),
  ),

  route('get /metrics', 'metrics', 'public', 'Prometheus metrics (text format); only on METRICS_PORT when that is set', {
    responses: { 200: { description: 'Prometheus text exposition format', contentType: 'text/plain', schema: { type: 'string' } } },
  }),
  route('get /openapi.json', 'meta', 'public', 'this OpenAPI 3.1 document', {
    responses: { 200: json('the document', { type: 'object' }) },
    extension: true,
  }),

  // Media (contract section 6).
  route('get /media', 'media', 'public', 'list objects by key, in key order', {
    query: mediaListQuery,
    responses: {
      200: json(
        'one page; nextAfter is the `after` of the next page, null on the last',
        z.object({ items: z.array(mediaObject), nextAfter: mediaKeySchema.nullable() }),
      ),
    },
    errors: [503],
  }),
  route('put /media/*key', 'media', 'public', 'store an object (raw body); replaces an earlier version of the key', {
    body: { schema: { type: 'string', contentMediaType: 'application/octet-stream' }, contentType: '*/*', required: true },
    responses: { 201: { ...json('stored and acknowledged', mediaObject), headers: { Location: 'the object URL' } } },
    errors: [400, 413, 503],
    description: 'While read-only mode is on: 503 with code read_only and Retry-After.',
  }),
  route('get /media/*key', 'media', 'public', 'stream an object (ETag is its sha256)', {
    responses: {
      200: {
        description: 'the content, with its Content-Type',
        contentType: '*/*',
        schema: { type: 'string', contentMediaType: 'application/octet-stream' },
        headers: { ETag: 'the sha256 in quotes', 'X-Media-Backend': 'the backend that served it' },
      },
    },
    errors: [400, 404, 503],
  }),
  route('head /media/*key', 'media', 'public', "an object's headers without its content", {
    responses: {
      200: {
        description: 'the headers GET would send',
        headers: { ETag: 'the sha256 in quotes', 'X-Media-Backend': 'the backend holding it' },
      },
    },
    errors: [400, 404, 503],
  }),
  route('delete /media/*key', 'media', 'public', 'delete an object', {
    responses: { 204: { description: 'deleted (or did not exist)' } },
    errors: [400, 404, 503],
    description: 'While read-only mode is on: 503 with code read_only and Retry-After.',
  }),

  // Public status page and Alertmanager's webhook (incidents).
  route('get /status', 'status', 'public', 'the public status page (HTML)', {
    responses: { 200: { description: 'HTML', contentType: 'text/html', schema: { type: 'string' } } },
    extension: true,
  }),
  route('get /status.json', 'status', 'public', 'the public status as JSON', {
    responses: { 200: json('components, open incidents, history') },
    extension: true,
  }),
  route('get /status/status.js', 'status', 'public', "the status page's script", {
    responses: { 200: { description: 'JavaScript', contentType: 'text/javascript', schema: { type: 'string' } } },
    extension: true,
  }),
  route('get /status/events', 'status', 'public', 'the public status as a live stream', {
    responses: { 200: sse },
    errors: [429, 503],
    description:
      'At most 10 streams per client address (429 with Retry-After) and 1000 in all (503 with Retry-After). ' +
      "Operators' /admin/events streams have a pool of their own, which anonymous streams cannot fill.",
    extension: true,
  }),
  route(
    'post /admin/incidents/alerts',
    'incidents',
    'alertmanager',
    "Alertmanager's webhook (version 4): opens, joins or resolves incidents",
    {
      body: { schema: alertmanagerPayload },
      responses: {
        200: json(
          'what the alerts did',
          z.object({
            incidents: z.array(z.string()),
            opened: z.number().int(),
            joined: z.number().int(),
            duplicates: z.number().int(),
            resolved: z.number().int(),
            alreadyResolved: z.number().int(),
            clamped: z.number().int(),
          }),
        ),
      },
      errors: [409, 429, 503],
      extension: true,
    },
  ),

  // Admin API (contract section 4).
  route('get /admin/dr/state', 'dr', 'viewer', 'the DR state document', {
    responses: { 200: json('the state, live facts and every instance', drState) },
  }),
  route(
    'post /admin/dr/state/reset',
    'dr',
    'operator',
    'put back the initial DR state for the configured nodes, the database target given (412 newer_writable_<node> when the other node takes writes on a newer timeline); also replaces a state lost from Redis',
    {
      body: { schema: resetBody },
      responses: { 200: json('the new state', z.looseObject({ version: z.number().int(), state: drState })) },
      errors: [409, 412, 503],
      extension: true,
    },
  ),
  route('get /admin/read-only', 'read-only', 'viewer', 'read-only mode', {
    responses: { 200: json('the mode', readOnlyState.extend({ active: z.boolean(), version: z.number().int() })) },
  }),
  route('put /admin/read-only', 'read-only', 'operator', 'set read-only mode for every instance', {
    body: { schema: readOnlyBody },
    responses: {
      200: json(
        'the new mode, how far it has propagated, and the writes its barrier and the database write fence met (writes)',
        z.looseObject({ readOnly: readOnlyState, version: z.number().int(), propagation: anyJson, writes: writesSummary }),
      ),
    },
    // 412 no_writable_node: a lift while no configured database node takes writes, or the active target does not.
    errors: [409, 412, 503],
  }),
  route('post /admin/database/promote', 'database', 'operator', 'promote the replica (pg_promote) after checking it', {
    body: { schema: promoteBody },
    responses: { 200: json('the checks, what was done, and the database write fence raised (writes)') },
    errors: [409, 412, 503],
  }),
  route('post /admin/database/switch', 'database', 'operator', "point every instance's connection at a target", {
    body: { schema: databaseSwitchBody },
    responses: {
      200: json('the checks, the change, its propagation and the writes its barrier and the database write fence met (writes)'),
    },
    errors: [409, 412, 503],
  }),
  route('post /admin/database/switchover', 'database', 'operator', 'planned switchover with zero loss', {
    body: { schema: switchoverBody },
    responses: { 200: json('the steps and their timings') },
    errors: [409, 412, 503],
    extension: true,
  }),
  route('post /admin/database/restore-point', 'backups', 'operator', 'create a named restore point', {
    description:
      'Names are unique: PostgreSQL accepts a name twice and recovery to a name stops at its first point, so every point is recorded in `restore_points` with it; a name already used answers 409 `restore_point_exists` and writes nothing.',
    body: { schema: restorePointBody },
    responses: { 201: json('the restore point', z.object({ restorePoint: anyJson })) },
    errors: [409, 412, 503],
    extension: true,
  }),
  route(
    'post /admin/database/restores',
    'backups',
    'operator',
    'the restore tool reports its start, a step or its outcome (an audited database.restore action)',
    {
      description:
        "409 `report_conflict`: a report with this restoreId and seq was recorded with other content (the record never changes); 409 `report_inconsistent`: it contradicts the restore's other reports (a second start or outcome, a report before the start or after the outcome, times going back as seq goes up). The `error` text is stored with credentials redacted.",
      body: { schema: restoreReportBody },
      responses: {
        201: json(
          'the audit event it became; a resent report (same restoreId, seq and content) answers the recorded event with `replayed: true`',
          z.object({
            event: z.object({ id: z.string(), action: z.string(), result: z.string(), at: z.string(), durationMs: z.number().nullable() }),
            replayed: z.literal(true).optional(),
          }),
        ),
      },
      errors: [409, 503],
      extension: true,
    },
  ),
  route('post /admin/verify/database', 'database', 'operator', 'deep database checks (canary write, replication)', {
    responses: { 200: json('every check passed', report), 503: json('a check failed (same body)', report) },
    errors: [409],
  }),
  route('post /admin/media/switch', 'media-admin', 'operator', "send every instance's media traffic to a backend", {
    body: { schema: mediaSwitchBody },
    responses: {
      200: json('the checks, the change, its propagation and the writes its barrier and the database write fence met (writes)'),
    },
    errors: [409, 412, 503],
  }),
  route('post /admin/media/sync', 'media-admin', 'operator', 'copy objects missing or different on `to`', {
    body: { schema: syncBody },
    responses: {
      200: json('the counts'),
      202: json('a large sync runs as a job; follow it at /admin/jobs/{id}', z.looseObject({ async: z.literal(true) })),
    },
    errors: [409, 412, 503],
  }),
  route('post /admin/verify/media', 'media-admin', 'operator', 'deep media checks (canary upload, download, delete; consistency)', {
    body: { schema: verifyMediaBody, required: false },
    responses: { 200: json('passed or degraded', report), 503: json('a check failed (same body)', report) },
    errors: [409],
  }),
  route('get /admin/jobs/:id', 'media-admin', 'viewer', 'a job (sync, consistency check, backup) and its progress', {
    params: jobParams,
    responses: { 200: json('the job', job) },
    errors: [400, 404, 503],
    extension: true,
  }),
  route('get /admin/audit', 'audit', 'viewer', 'the newest audit events', {
    query: auditQuery,
    responses: {
      200: json(
        'events (newest first) and how many wait in the spool',
        z.looseObject({ events: z.array(anyJson), pending: z.number().int() }),
      ),
    },
    errors: [503],
  }),

  // Backups (outside the contract).
  route(
    'get /admin/backups',
    'backups',
    'viewer',
    'the backup inventory and recovery point, the backup job queued or running (`running`: its age, overdue beyond BACKUP_RUNNING_MAX), and the live workers per job kind',
    {
      responses: { 200: json('the inventory') },
      errors: [503],
      extension: true,
    },
  ),
  route(
    'post /admin/backups',
    'backups',
    'operator',
    'request a backup (a worker runs it; 409 while another is queued or running, naming it, its age and worker; 503 no_worker with Retry-After when no live worker takes backups)',
    {
      body: { schema: backupBody },
      responses: { 202: json('the job', acceptedJob) },
      errors: [409, 503],
      extension: true,
    },
  ),
  route(
    'post /admin/backups/validate',
    'backups',
    'operator',
    'request a restore validation (a worker runs it; 503 no_worker with Retry-After when no live worker takes them)',
    {
      description:
        "412 with `usableRange` {from, to} for a target outside it (`from`: the backup's end rounded up to the second; `to`: the newest commit surely archived, an upper bound); 503 `dependency_unavailable` when the active database does not answer. A job with a `targetTime` first reads the archived WAL: a target after its newest commit ends the job refused (report status `refused`), nothing restored.",
      body: { schema: validateBody, required: false },
      responses: { 202: json('the job', acceptedJob) },
      errors: [409, 412, 503],
      extension: true,
    },
  ),
  route('get /admin/backups/validations', 'backups', 'viewer', 'the newest restore validations', {
    query: validationsQuery,
    responses: { 200: json('validations', z.object({ validations: z.array(anyJson) })) },
    errors: [503],
    extension: true,
  }),

  // Incidents (outside the contract).
  route('post /admin/incidents/assess', 'incidents', 'operator', 'assess the current facts against the severity rules', {
    responses: { 200: json('the assessment') },
    errors: [503],
    extension: true,
  }),
  route('post /admin/incidents', 'incidents', 'operator', 'open an incident', {
    body: { schema: createBody },
    responses: { 201: { ...json('the incident and its initial notification', incident), headers: { Location: 'the incident URL' } } },
    errors: [409, 503],
    extension: true,
  }),
  route('get /admin/incidents', 'incidents', 'viewer', 'list incidents', {
    query: listQuery,
    responses: { 200: json('incidents, newest first', z.object({ incidents: z.array(incident) })) },
    errors: [503],
    extension: true,
  }),
  route('get /admin/incidents/:id', 'incidents', 'viewer', 'an incident and its timeline', {
    responses: { 200: json('the incident', incident) },
    errors: [404, 503],
    extension: true,
  }),
  route('post /admin/incidents/:id/updates', 'incidents', 'operator', 'post an update (status, message, ETA, root cause)', {
    body: { schema: updateBody },
    responses: { 201: json('the incident', incident) },
    errors: [404, 409, 503],
    extension: true,
  }),
  route('post /admin/incidents/:id/acknowledge', 'incidents', 'operator', 'acknowledge an incident', {
    responses: { 200: json('the incident', incident) },
    errors: [404, 409, 503],
    extension: true,
  }),
  route('put /admin/incidents/:id/roles', 'incidents', 'operator', 'assign incident roles', {
    body: { schema: rolesBody },
    responses: { 200: json('the incident', incident) },
    errors: [404, 409, 503],
    extension: true,
  }),
  route('get /admin/incidents/:id/postmortem', 'incidents', 'viewer', 'a postmortem draft (Markdown)', {
    responses: { 200: { description: 'Markdown', contentType: 'text/markdown', schema: { type: 'string' } } },
    errors: [404, 503],
    extension: true,
  }),
  route('get /admin/events', 'incidents', 'viewer', 'live operator events (DR state, jobs, health, incidents)', {
    query: eventsQuery,
    responses: { 200: sse },
    errors: [503],
    extension: true,
  }),
];
