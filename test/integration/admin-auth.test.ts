import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';

const READS = [
  ['GET', '/admin/dr/state'],
  ['GET', '/admin/read-only'],
  ['GET', '/admin/audit'],
] as const;
const CHANGES = [['PUT', '/admin/read-only', { enabled: false, reason: 'auth matrix' }]] as const;

describe('admin authentication and authorisation', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'admin-auth' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  const send = (method: string, path: string, token?: string, body?: object) => {
    let req = request(api.url)[method.toLowerCase() as 'get' | 'put'](path);
    if (token) req = req.set('Authorization', `Bearer ${token}`);
    return body ? req.send(body) : req;
  };

  const ALL = [
    ...READS.map(([method, path]) => ({ method, path, body: undefined as object | undefined })),
    ...CHANGES.map(([method, path, body]) => ({ method, path, body })),
  ];
  it.each(ALL)('$method $path without a token answers 401 with WWW-Authenticate: Bearer', async ({ method, path, body }) => {
    const res = await send(method, path, undefined, body);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer /);
    expect(res.body.error).toMatchObject({ code: 'unauthorized', requestId: expect.any(String) });
  });

  it.each(READS)('%s %s is allowed to a viewer and an operator', async (method, path) => {
    expect((await send(method, path, VIEWER_TOKEN)).status).toBe(200);
    expect((await send(method, path, OPERATOR_TOKEN)).status).toBe(200);
  });

  it.each(CHANGES)('%s %s: a viewer gets 403 (audited as refused), an operator 200', async (method, path, body) => {
    const viewer = await send(method, path, VIEWER_TOKEN, body);
    expect(viewer.status).toBe(403);
    expect(viewer.body.error.code).toBe('forbidden');
    const operator = await send(method, path, OPERATOR_TOKEN, body);
    expect(operator.status).toBe(200);
    const audit = await send('GET', '/admin/audit?limit=5', OPERATOR_TOKEN);
    const refused = audit.body.events.find((e: { actor: string; result: string }) => e.actor === 'watch' && e.result === 'refused');
    expect(refused).toMatchObject({ role: 'viewer', action: `${method} ${path}`, detail: { code: 'forbidden' } });
  });

  it('never echoes or logs a presented token', async () => {
    const wrong = 'a-wrong-token-that-must-not-appear-1234';
    const res = await send('GET', '/admin/dr/state', wrong);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toContain('invalid_token');
    await send('GET', '/admin/dr/state', OPERATOR_TOKEN);
    expect(JSON.stringify(res.body) + JSON.stringify(res.headers)).not.toContain(wrong);
    expect(api.logs()).not.toContain(wrong);
    expect(api.logs()).not.toContain(OPERATOR_TOKEN);
    expect(api.logs()).not.toContain(VIEWER_TOKEN);
  });

  it('answers 400 for malformed JSON', async () => {
    const raw = '{"enabled":';
    const res = await request(api.url)
      .put('/admin/read-only')
      .set('Authorization', `Bearer ${OPERATOR_TOKEN}`)
      .set('Content-Type', 'application/json')
      .send(raw);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('bad_request');
  });

  it('answers 400 with details per field for unknown fields and wrong types', async () => {
    const res = await send('PUT', '/admin/read-only', OPERATOR_TOKEN, { enabled: 'yes', reason: 7, ttlSeconds: 1.5, force: true });
    expect(res.status).toBe(400);
    expect(Object.keys(res.body.error.details).sort()).toEqual(['enabled', 'force', 'reason', 'ttlSeconds']);
    const missing = await send('PUT', '/admin/read-only', OPERATOR_TOKEN, { enabled: true });
    expect(missing.body.error.details).toEqual({ reason: ['required'] });
    const ttlOff = await send('PUT', '/admin/read-only', OPERATOR_TOKEN, { enabled: false, reason: 'x', ttlSeconds: 5 });
    expect(ttlOff.status).toBe(400);
  });

  it('answers 413 for an admin body over 16 KiB', async () => {
    const res = await send('PUT', '/admin/read-only', OPERATOR_TOKEN, { enabled: true, reason: 'x'.repeat(20_000) });
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('payload_too_large');
  });

  it('slows repeated failures from one address down to 429 with Retry-After, while a valid token keeps working', async () => {
    // An instance of its own: a fresh throttle, untouched by the other tests' failures.
    const s3b = await startS3Server({ bucket: 'admin-throttle' });
    const api = await startInstance(mediaEnv('PRIMARY', s3b));
    const send = (method: 'GET' | 'PUT', path: string, token: string, body?: object) => {
      const req = method === 'GET' ? request(api.url).get(path) : request(api.url).put(path).send(body);
      return req.set('Authorization', `Bearer ${token}`);
    };
    try {
      const codes: number[] = [];
      for (let i = 0; i < 7; i += 1) codes.push((await send('GET', '/admin/dr/state', `guess-number-${i}-0000000000000000`)).status);
      expect(codes.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
      expect(codes.slice(5)).toEqual([429, 429]);
      const blocked = await send('GET', '/admin/dr/state', 'guess-number-8-0000000000000000');
      expect(blocked.status).toBe(429);
      expect(Number(blocked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // The operator behind the same address is not locked out, for reads or changes...
      expect((await send('GET', '/admin/dr/state', OPERATOR_TOKEN)).status).toBe(200);
      expect((await send('PUT', '/admin/read-only', OPERATOR_TOKEN, { enabled: false, reason: 'still works' })).status).toBe(200);
      // ...and its success does not reset the guesser's back-off.
      expect((await send('GET', '/admin/dr/state', 'guess-number-9-0000000000000000')).status).toBe(429);
      // Health reveals error details to a valid token: its token check is throttled the same way.
      const health = await request(api.url).get('/health/database').set('Authorization', 'Bearer guess-number-10-000000000000000');
      expect(health.status).toBe(429);
      expect(health.body.error.code).toBe('too_many_requests');
      expect((await request(api.url).get('/health/database').set('Authorization', `Bearer ${OPERATOR_TOKEN}`)).status).toBe(200);
      expect((await request(api.url).get('/health/database')).status).toBe(200);
    } finally {
      await api.stop();
      await s3b.destroy();
    }
  });

  it('counts wrong tokens on health towards the throttle', async () => {
    const s3b = await startS3Server({ bucket: 'admin-health-throttle' });
    const other = await startInstance(mediaEnv('PRIMARY', s3b));
    try {
      const codes: number[] = [];
      for (let i = 0; i < 6; i += 1)
        codes.push((await request(other.url).get('/health').set('Authorization', `Bearer wrong-${i}-000000000000000000000`)).status);
      expect(codes.slice(0, 5).every((c) => c === 200 || c === 503)).toBe(true);
      expect(codes[5]).toBe(429);
      expect((await request(other.url).get('/admin/dr/state').set('Authorization', 'Bearer wrong-again-0000000000000000000')).status).toBe(
        429,
      );
      expect((await request(other.url).get('/admin/dr/state').set('Authorization', `Bearer ${OPERATOR_TOKEN}`)).status).toBe(200);
    } finally {
      await other.stop();
      await s3b.destroy();
    }
  });
});

describe('admin API without ADMIN_TOKENS', () => {
  it('answers 401 to every admin route', async () => {
    const s3 = await startS3Server({ bucket: 'admin-none' });
    const api = await startInstance({ ...mediaEnv('PRIMARY', s3), ADMIN_TOKENS: undefined });
    try {
      expect((await request(api.url).get('/admin/dr/state').set('Authorization', `Bearer ${OPERATOR_TOKEN}`)).status).toBe(401);
      expect((await request(api.url).put('/admin/read-only').send({ enabled: true, reason: 'x' })).status).toBe(401);
    } finally {
      await api.stop();
      await s3.destroy();
    }
  });
});
