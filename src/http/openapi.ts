import type { RequestHandler } from 'express';
import { z } from 'zod';
import { mediaKeySchema } from '../services/media/media-key.ts';
import { errorSchema, ROUTES, type JsonSchema, type RouteDoc, type Schema } from '../routes/openapi-routes.ts';

export { ROUTES };

/**
 * The OpenAPI 3.1 document of every route the API app mounts. Request schemas are the zod schemas
 * the routes validate with (converted by zod's own `z.toJSONSchema`), so the document cannot drift
 * from validation; response schemas for the main answers are in openapi-routes.ts. Paths are Express
 * paths exactly as mounted (`:id`, `*key`), so a test can compare this registry with the app's
 * router stack both ways. `npm run openapi` writes the document to openapi.json.
 */

/** Kept equal to package.json's version (a test compares them). */
export const API_VERSION = '0.1.0';

// ---- The document ----

const STATUS_TEXT: Record<number, string> = {
  400: 'bad input; `details` names each field',
  401: 'no or unknown token (WWW-Authenticate: Bearer)',
  403: 'a viewer token changing state, or an address outside ADMIN_ALLOWED_CIDRS',
  404: 'not found',
  409: 'another DR operation holds the lock, or a concurrent change won',
  412: 'a precondition failed; the body says which',
  413: 'body too large',
  415: 'a Content-Encoding or charset the service cannot decode (identity, gzip, deflate, br; UTF-8)',
  429: 'too many failed token checks from this address (Retry-After)',
  503: 'a dependency needed for the request is down (Retry-After)',
};

function jsonSchema(schema: Schema, io: 'input' | 'output'): JsonSchema {
  if (!(schema instanceof z.ZodType)) return schema;
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as JsonSchema;
  return rest;
}

/** Express path → OpenAPI path: `:id` and `*key` become `{id}` and `{key}`. */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/[:*]([A-Za-z_]\w*)/g, '{$1}');
}

function parameters(route: RouteDoc): JsonSchema[] {
  const out: JsonSchema[] = [];
  const paramSchema = route.params ? (jsonSchema(route.params, 'input').properties as Record<string, JsonSchema>) : {};
  for (const match of route.path.matchAll(/([:*])([A-Za-z_]\w*)/g)) {
    const name = match[2]!;
    const wildcard = match[1] === '*';
    const schema = wildcard ? jsonSchema(mediaKeySchema, 'input') : (paramSchema[name] ?? { type: 'string' });
    out.push({ name, in: 'path', required: true, schema, ...(wildcard ? { description: 'the object key; may contain `/`' } : {}) });
  }
  if (route.query) {
    const query = jsonSchema(route.query, 'input') as { properties?: Record<string, JsonSchema>; required?: string[] };
    for (const [name, schema] of Object.entries(query.properties ?? {})) {
      out.push({ name, in: 'query', required: query.required?.includes(name) ?? false, schema });
    }
  }
  return out;
}

function responses(route: RouteDoc): JsonSchema {
  const out: JsonSchema = {};
  for (const [code, answer] of Object.entries(route.responses)) {
    const headers = answer.headers
      ? Object.fromEntries(Object.entries(answer.headers).map(([h, d]) => [h, { description: d, schema: { type: 'string' } }]))
      : undefined;
    const body =
      route.method === 'head' || code === '204'
        ? undefined
        : { [answer.contentType ?? 'application/json']: { schema: answer.schema ? jsonSchema(answer.schema, 'output') : {} } };
    out[code] = { description: answer.description, ...(headers ? { headers } : {}), ...(body ? { content: body } : {}) };
  }
  const errors = new Set(route.errors ?? []);
  if (route.query || route.params || route.body) errors.add(400);
  // The Alertmanager webhook answers an oversized payload with 400 (Alertmanager does not retry it).
  if (route.body && route.access !== 'public' && route.access !== 'alertmanager') errors.add(413);
  if (route.body && (route.body.contentType ?? 'application/json') === 'application/json') errors.add(415);
  if (route.access === 'viewer' || route.access === 'operator') [401, 403, 429].forEach((c) => errors.add(c));
  if (route.access === 'alertmanager') errors.add(401);
  for (const code of [...errors].sort()) {
    if (String(code) in out) continue;
    out[code] = {
      description: STATUS_TEXT[code] ?? 'error',
      ...(route.method === 'head' ? {} : { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }),
    };
  }
  out.default = {
    description: 'any other error (500 internal), in the same shape',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  };
  return out;
}

function operation(route: RouteDoc): JsonSchema {
  const security = route.access === 'public' ? [] : route.access === 'alertmanager' ? [{ alertmanagerToken: [] }] : [{ adminToken: [] }];
  const params = parameters(route);
  const role =
    route.access === 'viewer'
      ? 'Needs a viewer or operator token.'
      : route.access === 'operator'
        ? 'Needs an operator token; the change is audited.'
        : undefined;
  const description = [route.description, role, route.extension ? 'Outside the operator contract.' : undefined].filter(Boolean).join(' ');
  return {
    operationId: `${route.method}${openApiPath(route.path)
      .replace(/[{}]/g, '')
      .replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
    tags: [route.tag],
    summary: route.summary,
    ...(description ? { description } : {}),
    security,
    ...(params.length > 0 ? { parameters: params } : {}),
    ...(route.body
      ? {
          requestBody: {
            required: route.body.required ?? true,
            content: { [route.body.contentType ?? 'application/json']: { schema: jsonSchema(route.body.schema, 'input') } },
          },
        }
      : {}),
    responses: responses(route),
  };
}

/** The whole document, built from ROUTES. */
export function buildOpenApiDocument(routes: readonly RouteDoc[] = ROUTES): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) (paths[openApiPath(route.path)] ??= {})[route.method] = operation(route);
  return {
    openapi: '3.1.0',
    info: {
      title: 'SAV3 DR API',
      version: API_VERSION,
      description:
        'Health, metrics, media and the disaster-recovery admin API. The operator contract is shared/CONTRACT.md; routes marked "outside the operator contract" are this service\'s own.',
    },
    tags: [...new Set(routes.map((r) => r.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: { Error: jsonSchema(errorSchema, 'output') },
      securitySchemes: {
        adminToken: {
          type: 'http',
          scheme: 'bearer',
          description: 'an ADMIN_TOKENS token: viewer may GET, operator may also change state',
        },
        alertmanagerToken: { type: 'http', scheme: 'bearer', description: 'ALERTMANAGER_WEBHOOK_TOKEN (not an admin token)' },
      },
    },
  };
}

/** GET /openapi.json: the document, built once; public like FastAPI's and springdoc's (it holds no secret). */
export function openApiHandler(): RequestHandler {
  let body: string | undefined;
  return (_req, res) => {
    body ??= JSON.stringify(buildOpenApiDocument());
    res.setHeader('Cache-Control', 'no-cache');
    res.type('application/json').send(body);
  };
}
