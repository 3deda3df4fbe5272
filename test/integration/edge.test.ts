// The API's side of the edge: /metrics only on METRICS_PORT when it is set, and /admin only for
// client addresses in ADMIN_ALLOWED_CIDRS (loopback when unset), judged after TRUST_PROXY.
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';
import { freePort } from '../../support/common.ts';

describe('edge: internal metrics listener and the /admin allow-list', () => {
  let s3: S3ServerHandle;
  const instances: TestInstance[] = [];
  const start = async (env: Record<string, string>) => {
    const instance = await startInstance({ ...mediaEnv('PRIMARY', s3), ...env });
    instances.push(instance);
    return instance;
  };
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'edge-media' });
  });
  afterAll(async () => {
    for (const i of instances) await i.stop();
    await s3.destroy();
  });

  it('with METRICS_PORT, serves /metrics there only: 404 on PORT, nothing else on the metrics port', async () => {
    const metricsPort = await freePort();
    const api = await start({ METRICS_PORT: String(metricsPort) });
    expect((await request(api.url).get('/metrics')).status).toBe(404);
    expect((await request(api.url).post('/metrics')).status).toBe(404); // not a 405 naming a route PORT does not serve
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await metrics.text()).toMatch(/^sav3_dr_state_version \d+$/m);
    for (const path of ['/health', '/admin/dr/state', '/media', '/metrics/x'])
      expect((await fetch(`http://127.0.0.1:${metricsPort}${path}`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'POST' })).status).toBe(404);
    await api.stop();
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
  });

  it('without METRICS_PORT, /metrics stays on PORT (the contract default)', async () => {
    const api = await start({});
    expect((await request(api.url).get('/metrics')).status).toBe(200);
  });

  it('behind one proxy hop, refuses /admin to a client outside loopback before authentication, whatever it writes into X-Forwarded-For', async () => {
    const api = await start({ TRUST_PROXY: '1' });
    // The proxy appends the address it saw: the last entry is the client's real address.
    for (const xff of ['10.0.0.5', '127.0.0.1, 10.0.0.5', '172.17.0.1']) {
      const res = await request(api.url)
        .get('/admin/dr/state')
        .set('X-Forwarded-For', xff)
        .set('Authorization', `Bearer ${OPERATOR_TOKEN}`);
      expect({ xff, status: res.status, code: res.body.error?.code }).toEqual({ xff, status: 403, code: 'address_not_allowed' });
      expect(res.headers['www-authenticate']).toBeUndefined();
    }
    expect((await request(api.url).get('/admin/dr/state').set('X-Forwarded-For', '10.0.0.5, 127.0.0.1')).status).toBe(401);
    expect(
      (await request(api.url).get('/admin/dr/state').set('X-Forwarded-For', '127.0.0.1').set('Authorization', `Bearer ${OPERATOR_TOKEN}`))
        .status,
    ).toBe(200);
    // Everything outside /admin is unaffected.
    expect((await request(api.url).get('/health/live').set('X-Forwarded-For', '10.0.0.5')).status).toBe(200);
    expect((await request(api.url).get('/media?limit=1').set('X-Forwarded-For', '10.0.0.5')).status).toBe(200);
  });

  it('admits the configured ranges and then refuses loopback', async () => {
    const api = await start({ TRUST_PROXY: '1', ADMIN_ALLOWED_CIDRS: '10.0.0.0/8' });
    expect(
      (await request(api.url).get('/admin/dr/state').set('X-Forwarded-For', '10.20.30.40').set('Authorization', `Bearer ${OPERATOR_TOKEN}`))
        .status,
    ).toBe(200);
    expect((await request(api.url).get('/admin/dr/state').set('X-Forwarded-For', '127.0.0.1')).status).toBe(403);
    expect((await request(api.url).get('/admin/dr/state').set('X-Forwarded-For', '11.0.0.1')).status).toBe(403);
  });

  it('without TRUST_PROXY, judges the socket address and ignores X-Forwarded-For', async () => {
    const api = await start({});
    expect(
      (await request(api.url).get('/admin/dr/state').set('X-Forwarded-For', '10.0.0.5').set('Authorization', `Bearer ${OPERATOR_TOKEN}`))
        .status,
    ).toBe(200);
    const remote = await start({ ADMIN_ALLOWED_CIDRS: '10.0.0.0/8' });
    expect(
      (await request(remote.url).get('/admin/dr/state').set('X-Forwarded-For', '10.0.0.5').set('Authorization', `Bearer ${OPERATOR_TOKEN}`))
        .status,
    ).toBe(403);
  });
});
