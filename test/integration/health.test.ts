import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { INITIAL_STATE } from '../../src/services/dr-state/dr-state.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startHungServer, type HungServer } from '../../support/hung-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';
import { freePort } from '../../support/common.ts';

const TIMEOUT_MS = 300;

describe('health endpoints against live dependencies', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'health-media' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it.each(['/health/live', '/health/ready', '/health/database', '/health/media', '/health/redis', '/health'])(
    'GET %s answers 200 healthy with a timestamp',
    async (path) => {
      const res = await request(api.url).get(path);
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('healthy');
      expect(new Date(res.body.timestamp).toISOString()).toBe(res.body.timestamp);
      expect(res.headers['cache-control']).toBe('no-store');
    },
  );

  it.each(['/health/live', '/health/ready', '/health/database', '/health/media', '/health/redis', '/health'])(
    'HEAD %s answers like GET without a body',
    async (path) => {
      const res = await request(api.url).head(path);
      expect(res.status).toBe(200);
      expect(res.text).toBeUndefined();
    },
  );

  it('reports the database target, recovery state and probe timing', async () => {
    const res = await request(api.url).get('/health/database');
    expect(res.body).toMatchObject({ status: 'healthy', target: 'primary', inRecovery: false });
    expect(typeof res.body.latencyMs).toBe('number');
    expect(Date.parse(res.body.checkedAt)).not.toBeNaN();
  });

  it('reports the media backend and bucket, and Redis latency', async () => {
    const media = await request(api.url).get('/health/media');
    expect(media.body).toMatchObject({ status: 'healthy', backend: 'primary', bucket: 'health-media' });
    const redis = await request(api.url).get('/health/redis');
    expect(typeof redis.body.latencyMs).toBe('number');
  });

  it('gives the aggregate with components, read-only flag and state version', async () => {
    const res = await request(api.url).get('/health');
    expect(Object.keys(res.body.components).sort()).toEqual(['database', 'media', 'redis']);
    expect(res.body).toMatchObject({ readOnly: false, stateVersion: expect.any(Number) });
    expect(res.body.components.database.status).toBe('healthy');
  });

  it('gives readiness checks by name', async () => {
    const res = await request(api.url).get('/health/ready');
    expect(res.body.checks).toEqual({ database: 'healthy', process: 'healthy' });
  });

  it('answers 405 with Allow for a method a served path does not take, 404 for a path it does not serve', async () => {
    const post = await request(api.url).post('/health').send({});
    expect({ status: post.status, allow: post.headers.allow, code: post.body.error?.code }).toEqual({
      status: 405,
      allow: 'GET, HEAD',
      code: 'method_not_allowed',
    });
    const media = await request(api.url).post('/media/photos/a.jpg');
    expect({ status: media.status, allow: media.headers.allow?.split(', ').sort() }).toEqual({
      status: 405,
      allow: ['DELETE', 'GET', 'HEAD', 'PUT'],
    });
    expect((await request(api.url).post('/HEALTH/Live')).status).toBe(405); // routes match case-insensitively
    expect((await request(api.url).post('/health/nothing')).status).toBe(404);
    expect((await request(api.url).get('/healthz')).status).toBe(404);
    // No framework banner, also on the health routes (mounted before helmet).
    for (const path of ['/health', '/healthz', '/metrics'])
      expect((await request(api.url).get(path)).headers['x-powered-by']).toBeUndefined();
  });
});

describe('health endpoints when dependencies fail', () => {
  let hung: HungServer;
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    hung = await startHungServer();
    s3 = await startS3Server({ bucket: 'failing-media' });
    const redisPort = await freePort();
    api = await startInstance({
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: `postgresql://postgres@${hung.url}/sav3`,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      HEALTH_TIMEOUT_MS: String(TIMEOUT_MS),
      HEALTH_INTERVAL_MS: '60000',
    });
    await s3.stop();
  });
  afterAll(async () => {
    await api.stop();
    await hung.close();
    await s3.destroy();
  });

  it('when the database hangs, /health/database answers 503 timeout within HEALTH_TIMEOUT_MS + 100 ms', async () => {
    api.service.health.invalidate();
    const started = performance.now();
    const res = await request(api.url).get('/health/database');
    const elapsed = performance.now() - started;
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ status: 'unhealthy', target: 'primary', error: { code: 'timeout' } });
    expect(res.body.error.message).toBeUndefined();
    expect(elapsed).toBeLessThan(TIMEOUT_MS + 100);
  });

  it('100 concurrent health requests against a hung database open at most one probe connection, and it is closed', async () => {
    api.service.health.invalidate();
    const before = hung.connections;
    const started = performance.now();
    const answers = await Promise.all(Array.from({ length: 100 }, () => request(api.url).get('/health/ready')));
    const elapsed = performance.now() - started;
    expect(answers.every((r) => r.status === 503)).toBe(true);
    expect(hung.connections - before).toBeLessThanOrEqual(1);
    expect(elapsed).toBeLessThan(TIMEOUT_MS + 1000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(hung.open()).toBe(0);
  });

  it('shows the raw error message only to a request with a valid admin token', async () => {
    const anonymous = await request(api.url).get('/health/redis');
    expect(anonymous.status).toBe(503);
    expect(anonymous.body.error).toEqual({ code: 'connection_refused' });
    const wrong = await request(api.url).get('/health/redis').set('Authorization', 'Bearer not-a-valid-token-000000000');
    expect(wrong.body.error.message).toBeUndefined();
    const admin = await request(api.url).get('/health/redis').set('Authorization', `Bearer ${OPERATOR_TOKEN}`);
    expect(admin.body.error.code).toBe('connection_refused');
    expect(admin.body.error.message).toMatch(/ECONNREFUSED/);
  });

  it('a stopped S3 server makes /health/media 503 with connection_refused', async () => {
    api.service.health.invalidate();
    const res = await request(api.url).get('/health/media');
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ backend: 'primary', bucket: 'failing-media', error: { code: 'connection_refused' } });
  });

  it('the aggregate is unhealthy (503) when the database fails; liveness stays 200', async () => {
    const res = await request(api.url).get('/health');
    expect(res.status).toBe(503);
    expect(res.body.status).toBe('unhealthy');
    expect((await request(api.url).get('/health/live')).status).toBe(200);
  });

  it('keeps answering every other route while all dependencies are down', async () => {
    expect((await request(api.url).get('/metrics')).status).toBe(200);
    const media = await request(api.url).get('/media/some-key');
    expect(media.status).toBe(503);
    expect(media.body.error.code).toBe('dependency_unavailable');
  });
});

describe('degraded, not unhealthy', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'degraded-media' });
    // Redis is down from the start: the instance follows the DR state it kept on disk.
    const file = join(mkdtempSync(join(tmpdir(), 'sav3-health-')), 'dr-state.json');
    // Read-only mode is on in it: writes are refused anyway, so Redis being down only degrades.
    writeFileSync(
      file,
      JSON.stringify({
        ...INITIAL_STATE,
        version: 3,
        readOnly: { enabled: true, reason: 'incident', since: null, by: 'ops', expiresAt: null },
      }),
    );
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), REDIS_URL: `redis://127.0.0.1:${await freePort()}`, DR_STATE_FILE: file });
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('answers 200 degraded when Redis or media is down but the database answers', async () => {
    const res = await request(api.url).get('/health');
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('degraded');
    expect(res.body.components.redis).toMatchObject({ status: 'unhealthy', error: { code: 'connection_refused' } });
    expect(res.body.stateVersion).toBe(3);
    expect((await request(api.url).get('/health/ready')).status).toBe(200);
  });

  it('started from its state file with read-only off, it has not confirmed the state: writes 503 state_stale, /health says so, ready for reads', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sav3-health-')), 'dr-state.json');
    writeFileSync(file, JSON.stringify({ ...INITIAL_STATE, version: 3 }));
    const stale = await startInstance({
      ...mediaEnv('PRIMARY', s3),
      REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
      DR_STATE_FILE: file,
    });
    try {
      const put = await request(stale.url).put('/media/stale/a').send(Buffer.from('x'));
      expect(put.status).toBe(503);
      expect(put.body.error.code).toBe('state_stale');
      expect(put.headers['retry-after']).toBeDefined();
      const health = await request(stale.url).get('/health');
      expect(health.status).toBe(503);
      expect(health.body).toMatchObject({ readOnly: false, stateVersion: 3, components: { database: { error: { code: 'state_stale' } } } });
      expect((await request(stale.url).get('/health/ready')).status).toBe(200);
    } finally {
      await stale.stop();
    }
  });

  it('with neither Redis nor a state file, starts fail-safe: writes 503 state_unknown, /health unhealthy, ready for reads', async () => {
    const blind = await startInstance({ ...mediaEnv('PRIMARY', s3), REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
    try {
      const put = await request(blind.url).put('/media/fail-safe/a').send(Buffer.from('x'));
      expect(put.status).toBe(503);
      expect(put.body.error.code).toBe('state_unknown');
      const health = await request(blind.url).get('/health');
      expect(health.status).toBe(503);
      expect(health.body.components.database.error.code).toBe('state_unknown');
      expect((await request(blind.url).get('/health/ready')).status).toBe(200);
    } finally {
      await blind.stop();
    }
  });

  // s3rver checks access keys but not v4 signatures, so the wrong credential is the key.
  it('with wrong S3 credentials, /health/media says auth_failed', async () => {
    const bad = await startInstance({ ...mediaEnv('PRIMARY', s3), MEDIA_PRIMARY_ACCESS_KEY: 'unknown-access-key' });
    try {
      const res = await request(bad.url).get('/health/media');
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('auth_failed');
    } finally {
      await bad.stop();
    }
  });
});
