import http from 'node:http';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, startInstance } from '../support/instance.ts';

describe('graceful shutdown', () => {
  let s3: S3ServerHandle;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'shutdown-media' });
  });
  afterAll(async () => {
    await s3.destroy();
  });

  it('turns readiness 503 first, lets an in-flight upload finish, refuses new connections, closes its clients', async () => {
    const api = await startInstance(mediaEnv('PRIMARY', s3));
    const upload = new Promise<number>((resolve, reject) => {
      const req = http.request(`${api.url}/media/shutdown/in-flight.bin`, { method: 'PUT' }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1000, 1));
      setTimeout(() => req.end(Buffer.alloc(1000, 2)), 300);
    });
    await new Promise((resolve) => setTimeout(resolve, 100));

    const stopping = api.stop();
    const ready = await request(api.service.app).get('/health/ready');
    expect(ready.status).toBe(503);
    expect(ready.body.checks.process).toBe('unhealthy');
    expect((await request(api.service.app).get('/health/live')).status).toBe(503);

    expect(await upload).toBe(201);
    await stopping;
    await expect(fetch(`${api.url}/health/live`)).rejects.toThrow();
    expect(api.service.redis.status).toBe('end');
  });

  it('cuts requests still running at SHUTDOWN_TIMEOUT_MS', async () => {
    const api = await startInstance({ ...mediaEnv('PRIMARY', s3), SHUTDOWN_TIMEOUT_MS: '200' });
    const stalled = new Promise<string>((resolve) => {
      const req = http.request(`${api.url}/media/shutdown/stalled.bin`, { method: 'PUT' }, () => resolve('answered'));
      req.on('error', () => resolve('cut'));
      req.write(Buffer.alloc(10));
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    await api.stop();
    expect(performance.now() - started).toBeLessThan(1500);
    expect(await stalled).toBe('cut');
  });
});
