import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { Express } from 'express';
import request from 'supertest';
import { API_VERSION, buildOpenApiDocument, ROUTES } from '../../src/http/openapi.ts';
import { OPENAPI_FILE, renderOpenApi } from '../../scripts/openapi.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance, VIEWER_TOKEN } from '../support/instance.ts';

type Doc = {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: object }> }> }>>;
  components: { schemas: Record<string, object> };
};
const doc = buildOpenApiDocument() as unknown as Doc;
const ROOT = join(__dirname, '..', '..');

/**
 * @seriousme/openapi-schema-validator (the OpenAPI 3.0/3.1 JSON schemas, Ajv) is an ES module,
 * which Jest on this Node cannot load: it runs in a plain Node process, given the document on stdin.
 */
function validateOpenApi(document: unknown): { valid: boolean; version?: string; errors?: unknown } {
  const code = `
    import { Validator } from '@seriousme/openapi-schema-validator';
    let text = '';
    for await (const chunk of process.stdin) text += chunk;
    const validator = new Validator();
    const result = await validator.validate(JSON.parse(text));
    process.stdout.write(JSON.stringify({ valid: result.valid, version: validator.version, errors: result.errors }));
  `;
  return JSON.parse(
    execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, input: JSON.stringify(document), encoding: 'utf8' }),
  );
}

/** Every (method, Express path) the app's router stack answers, walking the routers mounted at the root. */
function mountedRoutes(app: Express): string[] {
  const found: string[] = [];
  type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: Layer[] }; slash?: boolean };
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) for (const method of Object.keys(layer.route.methods)) found.push(`${method} ${layer.route.path}`);
      else if (layer.handle?.stack) {
        // A router mounted under a prefix would need the prefix added to its paths: none is today.
        if (layer.handle.stack.some((l) => l.route) && layer.slash !== true)
          throw new Error('a router with routes is mounted under a prefix');
        walk(layer.handle.stack);
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack);
  return found;
}

describe('the OpenAPI document', () => {
  it('is committed as openapi.json exactly as the code describes it (npm run openapi)', () => {
    expect(readFileSync(OPENAPI_FILE, 'utf8')).toBe(renderOpenApi());
  });

  it('is a valid OpenAPI 3.1 document, and the validator rejects a broken copy', () => {
    const result = validateOpenApi(doc);
    expect(result.errors).toBeUndefined();
    expect(result).toEqual({ valid: true, version: '3.1' });

    // A parameter `in: body` (OpenAPI 2) and a response without a description are not OpenAPI 3.1.
    const broken = structuredClone(doc) as unknown as {
      paths: Record<string, Record<string, { parameters?: unknown[]; responses: Record<string, { description?: string }> }>>;
    };
    broken.paths['/media']!.get!.parameters!.push({ name: 'q', in: 'body' });
    expect(validateOpenApi(broken).valid).toBe(false);
    const noDescription = structuredClone(doc) as typeof broken;
    delete noDescription.paths['/health']!.get!.responses['200']!.description;
    expect(validateOpenApi(noDescription).valid).toBe(false);
  });

  it('carries the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(API_VERSION).toBe(pkg.version);
  });

  it('documents errors in the contract shape for every operation, and every schema compiles as JSON Schema 2020-12', () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    ajv.addSchema(doc.components.schemas.Error as object, '#/components/schemas/Error');
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(operations)) {
        const def = op.responses.default?.content?.['application/json']?.schema;
        expect([`${method} ${path}`, def]).toEqual([`${method} ${path}`, { $ref: '#/components/schemas/Error' }]);
        for (const answer of Object.values(op.responses)) {
          for (const media of Object.values(answer.content ?? {})) expect(() => ajv.compile(media.schema)).not.toThrow();
        }
      }
    }
  });
});

describe('the OpenAPI document against the running app', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
  ajv.addSchema(doc.components.schemas.Error as object, '#/components/schemas/Error');

  /** The answer must match what the document says for this operation and status. */
  const conforms = (method: string, path: string, res: request.Response, expected: number | number[]) => {
    expect([method, path, [expected].flat().includes(res.status) ? 'expected status' : res.status]).toEqual([
      method,
      path,
      'expected status',
    ]);
    const answer = doc.paths[path]?.[method]?.responses[String(res.status)] ?? doc.paths[path]?.[method]?.responses.default;
    expect([method, path, res.status, answer !== undefined]).toEqual([method, path, res.status, true]);
    const schema = answer!.content?.['application/json']?.schema;
    if (!schema) return;
    const validate = ajv.compile(schema);
    const ok = validate(res.body);
    expect([method, path, res.status, ok ? null : validate.errors]).toEqual([method, path, res.status, null]);
  };

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'openapi-media' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api?.stop();
    await s3?.destroy();
  });

  it('documents every route the app mounts, and mounts every documented route', () => {
    const mounted = mountedRoutes(api.service.app);
    const documented = ROUTES.map((r) => `${r.method} ${r.path}`);
    expect(mounted.length).toBeGreaterThan(40);
    expect(mounted.filter((r) => !documented.includes(r))).toEqual([]);
    // HEAD is answered by a GET route (Express), so a documented HEAD needs a HEAD or a GET.
    const answered = (r: string) => mounted.includes(r) || (r.startsWith('head ') && mounted.includes(r.replace(/^head /, 'get ')));
    expect(documented.filter((r) => !answered(r))).toEqual([]);
    expect(new Set(documented).size).toBe(documented.length);
  });

  it('serves the document at GET /openapi.json without a token', async () => {
    const res = await request(api.url).get('/openapi.json');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual(JSON.parse(renderOpenApi()));
  });

  it('describes the real answers of health, media and admin routes', async () => {
    const admin = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
    for (const path of ['/health/live', '/health/ready', '/health/database', '/health/media', '/health/redis', '/health']) {
      // A probe can time out on a loaded machine (HEALTH_TIMEOUT_MS is 300 here): 503 has the same documented body.
      conforms('get', path, await request(api.url).get(path), [200, 503]);
    }
    conforms(
      'put',
      '/media/{key}',
      await request(api.url).put('/media/openapi/a.txt').set('Content-Type', 'text/plain').send('hello'),
      201,
    );
    conforms('get', '/media', await request(api.url).get('/media?prefix=openapi/'), 200);
    conforms('get', '/media', await request(api.url).get('/media?limit=0'), 400);
    conforms('get', '/media/{key}', await request(api.url).get('/media/openapi/missing'), 404);
    conforms('get', '/admin/dr/state', await request(api.url).get('/admin/dr/state').set(admin), 200);
    conforms('get', '/admin/read-only', await request(api.url).get('/admin/read-only').set(admin), 200);
    conforms('get', '/admin/audit', await request(api.url).get('/admin/audit?limit=5').set(admin), 200);
    conforms('get', '/admin/incidents', await request(api.url).get('/admin/incidents').set(admin), 200);
    conforms('get', '/admin/backups/validations', await request(api.url).get('/admin/backups/validations').set(admin), 200);
    conforms('put', '/admin/read-only', await request(api.url).put('/admin/read-only').set(admin).send({ enabled: 'yes' }), 400);
    conforms(
      'put',
      '/admin/read-only',
      await request(api.url)
        .put('/admin/read-only')
        .set({ Authorization: `Bearer ${VIEWER_TOKEN}` })
        .send({ enabled: false, reason: 'x' }),
      403,
    );
    conforms('get', '/admin/jobs/{id}', await request(api.url).get('/admin/jobs/not-a-uuid').set(admin), 400);
    conforms('get', '/admin/audit', await request(api.url).get('/admin/audit'), 401);
  });

  it('rejects what the request schemas reject: the documented body schema and the route agree on a bad body', async () => {
    const admin = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
    const schema = (
      doc.paths['/admin/media/switch']!.post as unknown as { requestBody: { content: { 'application/json': { schema: object } } } }
    ).requestBody.content['application/json'].schema;
    const validate = ajv.compile(schema);
    for (const body of [{ to: 'elsewhere' }, { to: 'backup', extra: 1 }, {}]) {
      expect(validate(body)).toBe(false);
      const res = await request(api.url).post('/admin/media/switch').set(admin).send(body);
      expect([body, res.status]).toEqual([body, 400]);
    }
    expect(validate({ to: 'backup', dryRun: true })).toBe(true);
  });
});
