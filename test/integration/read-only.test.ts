import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { eventually } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe('read-only mode across two instances sharing one Redis', () => {
  let s3: S3ServerHandle;
  let a: TestInstance;
  let b: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'read-only-media' });
    const prefix = uniquePrefix();
    a = await startInstance({ ...mediaEnv('PRIMARY', s3), INSTANCE_ID: 'api-a' }, prefix);
    b = await startInstance({ ...mediaEnv('PRIMARY', s3), INSTANCE_ID: 'api-b' }, prefix);
  });
  afterAll(async () => {
    await a.stop();
    await b.stop();
    await s3.destroy();
  });

  const setReadOnly = (api: TestInstance, body: object) => request(api.url).put('/admin/read-only').set(auth).send(body);

  it('turned on at one instance, it holds on the other within one second, and both report the version applied', async () => {
    const started = performance.now();
    const res = await setReadOnly(a, { enabled: true, reason: 'primary database corrupted' });
    expect(res.status).toBe(200);
    expect(res.body.readOnly).toMatchObject({ enabled: true, reason: 'primary database corrupted', by: 'ops', expiresAt: null });
    const version = res.body.version as number;
    expect(res.body.propagation).toMatchObject({ applied: 2, total: 2 });

    const seen = await eventually(
      () => request(b.url).get('/health/live'),
      (r) => r.headers['x-read-only'] === 'true',
      1000,
    );
    expect(seen.headers['x-read-only']).toBe('true');
    expect(performance.now() - started).toBeLessThan(1000 + 1500);

    const state = await request(b.url).get('/admin/dr/state').set(auth);
    expect(state.body).toMatchObject({ version, readOnly: { enabled: true, active: true } });
    expect(state.body.instances.map((i: { id: string; appliedVersion: number }) => [i.id, i.appliedVersion])).toEqual([
      ['api-a', version],
      ['api-b', version],
    ]);
  });

  it('refuses POST/PUT/PATCH/DELETE outside /admin and /health with 503, Retry-After and the reason; reads keep working', async () => {
    for (const method of ['put', 'delete', 'post', 'patch'] as const) {
      const res = await request(b.url)[method]('/media/read-only/blocked.txt').send('x');
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('30');
      expect(res.headers['x-read-only']).toBe('true');
      expect(res.body.error).toMatchObject({ code: 'read_only', reason: 'primary database corrupted', message: expect.any(String) });
    }
    const list = await request(b.url).get('/media');
    expect(list.status).toBe(200);
    expect(list.headers['x-read-only']).toBe('true');
    expect((await request(b.url).get('/admin/read-only').set(auth)).body).toMatchObject({ enabled: true, active: true });
  });

  it('exports the mode, the rejections and the state version', async () => {
    const text = (await request(b.url).get('/metrics')).text;
    expect(text).toMatch(/^sav3_read_only_mode 1$/m);
    expect(text).toMatch(/^sav3_read_only_rejections_total [1-9]\d*$/m);
    expect(text).toMatch(/^sav3_dr_state_version [1-9]\d*$/m);
  });

  it('turned off at the other instance, writes work again everywhere', async () => {
    const res = await setReadOnly(b, { enabled: false, reason: 'replica promoted' });
    expect(res.status).toBe(200);
    await eventually(
      () => request(a.url).get('/health/live'),
      (r) => r.headers['x-read-only'] === undefined,
      1000,
    );
    const put = await request(a.url).put('/media/read-only/after.txt').send('ok');
    expect(put.status).toBe(201);
    expect(put.headers['x-read-only']).toBeUndefined();
  });

  it('racing changes from both instances: every winner bumps the version once, losers get 409 with the current state', async () => {
    const before = (await request(a.url).get('/admin/read-only').set(auth)).body.version as number;
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => setReadOnly(i % 2 ? a : b, { enabled: i % 3 === 0, reason: `race ${i}` })),
    );
    const wins = answers.filter((r) => r.status === 200);
    const losses = answers.filter((r) => r.status === 409);
    expect(wins.length + losses.length).toBe(10);
    expect(wins.length).toBeGreaterThanOrEqual(1);
    for (const loss of losses) expect(loss.body.error).toMatchObject({ code: 'conflict', current: { version: expect.any(Number) } });
    const versions = wins.map((w) => w.body.version as number).sort((x, y) => x - y);
    expect(versions).toEqual(Array.from({ length: wins.length }, (_, i) => before + 1 + i));
    const after = await request(b.url).get('/admin/dr/state').set(auth);
    expect(after.body.version).toBe(before + wins.length);
  });

  it('a mode with ttlSeconds turns itself off at expiry on every instance, recorded exactly once', async () => {
    const res = await setReadOnly(a, { enabled: true, reason: 'short maintenance', ttlSeconds: 1 });
    expect(res.status).toBe(200);
    expect(Date.parse(res.body.readOnly.expiresAt) - Date.now()).toBeLessThanOrEqual(1000);
    const blocked = await request(b.url).put('/media/read-only/ttl.txt').send('x');
    expect(blocked.status).toBe(503);
    expect(Number(blocked.headers['retry-after'])).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect((await request(b.url).put('/media/read-only/ttl.txt').send('x')).status).toBe(201);
    const state = await eventually(
      () => request(a.url).get('/admin/dr/state').set(auth),
      (r) => r.body.readOnly.enabled === false,
      2000,
    );
    expect(state.body.readOnly).toMatchObject({ enabled: false, by: 'system:ttl' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const audit = await request(a.url).get('/admin/audit?limit=50').set(auth);
    const expiries = audit.body.events.filter((e: { action: string }) => e.action === 'read_only.expire');
    expect(expiries).toHaveLength(1);
  });

  it('records every change in the audit log with who, what, before, after and result', async () => {
    await setReadOnly(a, { enabled: true, reason: 'audit check' });
    await setReadOnly(a, { enabled: false, reason: 'audit check done' });
    const audit = await request(b.url).get('/admin/audit?limit=2').set(auth);
    expect(audit.status).toBe(200);
    expect(audit.body.events).toHaveLength(2);
    expect(audit.body.events[0]).toMatchObject({
      actor: 'ops',
      role: 'operator',
      action: 'read_only.set',
      result: 'success',
      before: { enabled: true, reason: 'audit check' },
      after: { enabled: false, reason: 'audit check done' },
      instanceId: 'api-a',
      requestId: expect.any(String),
    });
    expect(Date.parse(audit.body.events[0].at)).toBeGreaterThanOrEqual(Date.parse(audit.body.events[1].at));
    expect(a.logs()).toContain('"action":"read_only.set"');
  });
});
