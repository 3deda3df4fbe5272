import { Redis } from 'ioredis';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startOwnRedis, type OwnRedis } from '../../support/redis-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { eventually } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe('Redis faults', () => {
  let s3: S3ServerHandle;
  let redis: OwnRedis;
  let a: TestInstance;
  let b: TestInstance;
  let direct: Redis;
  const prefix = uniquePrefix();

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'redis-faults' });
    redis = await startOwnRedis();
    const env = { ...mediaEnv('PRIMARY', s3), REDIS_URL: redis.url };
    a = await startInstance({ ...env, INSTANCE_ID: 'fault-a' }, prefix);
    b = await startInstance({ ...env, INSTANCE_ID: 'fault-b' }, prefix);
    direct = new Redis(redis.port, '127.0.0.1', { lazyConnect: true });
    direct.on('error', () => undefined);
  });
  afterAll(async () => {
    direct.disconnect();
    await a.stop();
    await b.stop();
    await redis.stop();
    await s3.destroy();
  });

  it('after FLUSHALL the instances put back the newest state: read-only stays on', async () => {
    const on = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'before flush' });
    expect(on.status).toBe(200);
    await direct.connect();
    await direct.flushall();
    const restored = await eventually(
      () => direct.get(`${prefix}dr:state`),
      (v) => v !== null,
      3000,
    );
    expect(JSON.parse(restored!)).toMatchObject({ version: on.body.version, readOnly: { enabled: true, reason: 'before flush' } });
    expect((await request(b.url).put('/media/flush/x').send('x')).status).toBe(503);
  });

  it('while Redis is down: last known state keeps serving, /health is degraded, changes answer 503', async () => {
    await redis.stop();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const write = await request(a.url).put('/media/down/x').send('x');
    expect(write.status).toBe(503);
    expect(write.body.error.code).toBe('read_only');
    a.service.health.invalidate();
    const health = await request(a.url).get('/health');
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'degraded', readOnly: true, components: { redis: { status: 'unhealthy' } } });
    const change = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'during outage' });
    expect(change.status).toBe(503);
    expect(change.body.error).toMatchObject({ code: 'dependency_unavailable', dependency: 'redis' });
    const state = await request(b.url).get('/admin/dr/state').set(auth);
    expect(state.status).toBe(200);
    expect(state.body).toMatchObject({ readOnly: { enabled: true }, stateStore: 'down', instances: null });
    // The refused change is audited (PostgreSQL is up).
    const audit = await request(a.url).get('/admin/audit?limit=1').set(auth);
    expect(audit.body.events[0]).toMatchObject({ action: 'read_only.set', result: 'refused', detail: { code: 'dependency_unavailable' } });
  });

  it('when Redis restarts empty, the state comes back, and changes work and reach both instances again', async () => {
    await redis.start();
    const restored = await eventually(
      async () => {
        const probe = new Redis(redis.port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => null });
        probe.on('error', () => undefined);
        try {
          await probe.connect();
          return await probe.get(`${prefix}dr:state`);
        } catch {
          return null;
        } finally {
          probe.disconnect();
        }
      },
      (v) => v !== null,
      5000,
    );
    expect(JSON.parse(restored!).readOnly.enabled).toBe(true);
    const off = await eventually(
      () => request(b.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'redis back' }),
      (r) => r.status === 200,
      5000,
    );
    expect(off.status).toBe(200);
    await eventually(
      () => request(a.url).get('/health/live'),
      (r) => r.headers['x-read-only'] === undefined,
      1000,
    );
    expect((await request(a.url).put('/media/back/x').send('x')).status).toBe(201);
  });
});

describe('audit events while PostgreSQL is down', () => {
  let s3: S3ServerHandle;
  let proxy: TcpProxy;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'audit-spool' });
    const db = new URL(process.env.TEST_DATABASE_URL!);
    proxy = await startTcpProxy(Number(db.port || 5432));
    db.port = String(proxy.port);
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), DATABASE_URL: db.toString() });
  });
  afterAll(async () => {
    await api.stop();
    await proxy.close();
    await s3.destroy();
  });

  it('keeps the event in the spool and writes it when PostgreSQL returns: none is lost', async () => {
    proxy.setMode('refuse');
    // Every test instance shares the test database's audit table: find the event by a unique reason.
    const reason = `db outage drill ${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const change = await request(api.url).put('/admin/read-only').set(auth).send({ enabled: true, reason });
    expect(change.status).toBe(200);
    const whileDown = await request(api.url).get('/admin/audit').set(auth);
    expect(whileDown.status).toBe(503);
    expect(await api.service.audit.pending()).toBeGreaterThanOrEqual(1);

    proxy.setMode('pass');
    const after = await eventually(
      () => request(api.url).get('/admin/audit?limit=20').set(auth),
      (r) =>
        r.status === 200 &&
        r.body.pending === 0 &&
        r.body.events.some((e: { after: { reason?: string } | null }) => e.after?.reason === reason),
      8000,
    );
    const event = after.body.events.find((e: { after: { reason?: string } | null }) => e.after?.reason === reason);
    expect(event).toMatchObject({
      action: 'read_only.set',
      result: 'success',
      after: { enabled: true, reason },
      detail: { version: change.body.version },
    });
    await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'drill over' }).expect(200);
  });
});
