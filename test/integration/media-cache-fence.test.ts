import request from 'supertest';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import type { TestInstance } from '../support/instance.ts';
import { startMediaWorld, type MediaWorld } from '../support/world.ts';

// An instance that cannot reach Redis writes: once it has acknowledged, no other instance serves
// the version it replaced or the object it deleted from the shared metadata cache (strictly: the
// writer waits out the cache TTL before answering when it could not update the entry), also when
// the writer stops right after its answer and never reaches Redis again.

const REDIS_PORT = Number(new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379').port || 6379);

async function body(url: string): Promise<string> {
  const res = await fetch(url);
  const text = Buffer.from(await res.arrayBuffer()).toString();
  return `${res.status} ${res.status === 200 ? text : ''}`.trim();
}

describe('media metadata cache across instances when the writer cannot reach Redis', () => {
  let world: MediaWorld;
  let proxy: TcpProxy;
  let a: TestInstance;
  let b: TestInstance;
  let c: TestInstance;

  beforeAll(async () => {
    // One Redis key prefix for all three: one deployment sharing its cache.
    world = await startMediaWorld({ bucket: 'cache-fence', env: { DR_STATE_LEASE_MS: '60000' } });
    proxy = await startTcpProxy(REDIS_PORT);
    a = await world.start({ INSTANCE_ID: 'fence-a' });
    b = await world.start({ INSTANCE_ID: 'fence-b' });
    c = await world.start({ INSTANCE_ID: 'fence-c', REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
    await proxy?.close();
  });

  it('after C acknowledges an overwrite or a DELETE, A and B serve the new version / 404 at once, while C lives and after it stops', async () => {
    await request(a.url).put('/media/fence/over').send('v1').expect(201);
    await request(a.url).put('/media/fence/gone').send('doomed').expect(201);
    await request(a.url).put('/media/fence/late').send('late-v1').expect(201);
    for (const inst of [a, b]) {
      expect(await body(`${inst.url}/media/fence/over`)).toBe('200 v1'); // now cached in Redis
      expect(await body(`${inst.url}/media/fence/gone`)).toBe('200 doomed');
      expect(await body(`${inst.url}/media/fence/late`)).toBe('200 late-v1');
    }

    proxy.setMode('refuse'); // C is cut off from Redis; Redis keeps its entries for A and B
    await new Promise((r) => setTimeout(r, 300));
    const t = Date.now();
    const [over, gone, late] = await Promise.all([
      request(c.url).put('/media/fence/over').send('v2'),
      request(c.url).delete('/media/fence/gone'),
      request(c.url).put('/media/fence/late').send('late-v2'),
    ]);
    const writeMs = Date.now() - t;
    expect([over.status, gone.status, late.status]).toEqual([201, 204, 201]);

    // C is alive and still partitioned: A and B must not serve what it replaced.
    for (const inst of [a, b]) {
      expect(await body(`${inst.url}/media/fence/over`)).toBe('200 v2');
      expect(await body(`${inst.url}/media/fence/gone`)).toBe('404');
    }
    // C dies right after acknowledging, never having reached Redis.
    await c.stop();
    const until = Date.now() + 1500;
    do {
      for (const inst of [a, b]) {
        expect(await body(`${inst.url}/media/fence/late`)).toBe('200 late-v2');
        expect(await body(`${inst.url}/media/fence/over`)).toBe('200 v2');
        expect(await body(`${inst.url}/media/fence/gone`)).toBe('404');
      }
    } while (Date.now() < until);
    // The price: a write that could not update the cache waited out its TTL (2 s) + margin.
    expect(writeMs).toBeGreaterThanOrEqual(2000);
    expect(writeMs).toBeLessThan(15_000);
  }, 60_000);
});
