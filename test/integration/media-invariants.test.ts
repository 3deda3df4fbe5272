import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pg from 'pg';
import request from 'supertest';
import { startS3Server } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, ownDatabase, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { startMediaWorld, type MediaWorld } from '../support/world.ts';
import { startOwnRedis } from '../../support/redis-server.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { eventually, sha256Hex } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

async function getRaw(url: string): Promise<{ status: number; etag?: string; length?: number; body: Buffer }> {
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, etag: res.headers.get('etag') ?? undefined, length: Number(res.headers.get('content-length') ?? -1), body };
}

describe('media invariants through two instances (one database, one Redis, two S3 servers)', () => {
  let world: MediaWorld;
  let a: TestInstance;
  let b: TestInstance;
  let sql: pg.Client;

  beforeAll(async () => {
    // One Redis key prefix for both, as instances of one deployment share their cache.
    world = await startMediaWorld({
      bucket: 'inv-primary',
      backupBucket: 'inv-backup',
      env: {
        MEDIA_IDLE_BODY_TIMEOUT_MS: '600',
        MEDIA_SYNC_INLINE_MAX: '5000',
        MEDIA_SYNC_CONCURRENCY: '16',
        MEDIA_S3_TIMEOUT_MS: '30000',
      },
    });
    sql = world.sql;
    a = await world.start({ INSTANCE_ID: 'inv-a' });
    b = await world.start({ INSTANCE_ID: 'inv-b' });
  });
  afterAll(async () => {
    await world?.destroy();
  });

  it('concurrent PUTs to one key through two instances: every reader gets exactly one acknowledged body, with its sha256 and length', async () => {
    for (let round = 0; round < 5; round += 1) {
      const bodies = Array.from({ length: 8 }, (_, i) => randomBytes(1000 + i * 3000 + round));
      const results = await Promise.all(
        bodies.map((body, i) =>
          request(i % 2 ? a.url : b.url)
            .put('/media/race/one')
            .send(body),
        ),
      );
      expect(results.map((r) => r.status)).toEqual(bodies.map(() => 201));
      const acked = new Set(bodies.map((b) => sha256Hex(b)));
      const { rows } = await sql.query('SELECT sha256 FROM media_objects WHERE key = $1', ['race/one']);
      for (const url of [a.url, b.url]) {
        const got = await getRaw(`${url}/media/race/one`);
        expect(got.status).toBe(200);
        expect(acked.has(sha256Hex(got.body))).toBe(true);
        expect(got.etag).toBe(`"${sha256Hex(got.body)}"`);
        expect(got.length).toBe(got.body.length);
        expect(sha256Hex(got.body)).toBe(rows[0].sha256.trim());
      }
    }
  });

  it('a PUT racing a DELETE never leaves a key whose HEAD says 200 while GET says 404', async () => {
    for (let round = 0; round < 15; round += 1) {
      await request(a.url).put('/media/race/del').send('before').expect(201);
      const [put] = await Promise.all([
        request(a.url).put('/media/race/del').send(`after-${round}`),
        request(b.url).delete('/media/race/del'),
      ]);
      expect(put.status).toBe(201);
      const head = await request(b.url).head('/media/race/del');
      const get = await getRaw(`${a.url}/media/race/del`);
      expect([head.status, get.status]).toEqual(head.status === 200 ? [200, 200] : [404, 404]);
      if (get.status === 200) expect(get.body.toString()).toBe(`after-${round}`);
    }
  });

  it('stores a key with a 250-character segment (the key is no longer the object name)', async () => {
    const key = `long/${'s'.repeat(250)}/${'t'.repeat(250)}`;
    expect((await request(a.url).put(`/media/${key}`).send('long')).status).toBe(201);
    expect((await getRaw(`${b.url}/media/${key}`)).body.toString()).toBe('long');
  });

  it.each([
    ['/media?constructor=1'],
    ['/media?__proto__=x'],
    ['/media?prefix=a&prefix=b'],
    ['/media?prefix[x]=1'],
    ['/media/a%zz'],
    ['/media?limit=1e3'],
    ['/media?after=%00'],
  ])('answers 400, never 500, to the malformed %s', async (path) => {
    const res = await request(a.url).get(path);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('bad_request');
  });

  it('list prefixes match literally: _ and . are not wildcards', async () => {
    for (const k of ['lit/a_b/1', 'lit/axb/1', 'lit/a.b/1', 'lit/aab/1']) await request(a.url).put(`/media/${k}`).send(k).expect(201);
    const under = await request(a.url).get('/media').query({ prefix: 'lit/a_b' });
    expect(under.body.items.map((i: { key: string }) => i.key)).toEqual(['lit/a_b/1']);
    const dot = await request(a.url).get('/media').query({ prefix: 'lit/a.' });
    expect(dot.body.items.map((i: { key: string }) => i.key)).toEqual(['lit/a.b/1']);
  });

  it('serves untrusted content with nosniff and a sandboxing CSP, as an attachment when a browser would render it actively', async () => {
    await request(a.url).put('/media/xss/page').set('Content-Type', 'text/html').send('<script>alert(1)</script>').expect(201);
    await request(a.url).put('/media/xss/pic').set('Content-Type', 'image/svg+xml').send('<svg onload="alert(1)"/>').expect(201);
    await request(a.url).put('/media/xss/png').set('Content-Type', 'image/png').send(randomBytes(10)).expect(201);
    for (const path of ['/media/xss/page', '/media/xss/pic']) {
      for (const res of [await request(a.url).get(path), await request(a.url).head(path)]) {
        expect(res.headers['x-content-type-options']).toBe('nosniff');
        expect(res.headers['content-security-policy']).toBe("default-src 'none'; sandbox");
        expect(res.headers['content-disposition']).toBe('attachment');
      }
    }
    const png = await request(a.url).get('/media/xss/png');
    expect(png.headers['content-disposition']).toBeUndefined();
    expect(png.headers['content-security-policy']).toBe("default-src 'none'; sandbox");
  });

  it('an upload whose client goes silent is cut after the idle-body timeout and stores nothing', async () => {
    const started = Date.now();
    const outcome = await new Promise<string>((resolve) => {
      const req = http.request(`${a.url}/media/idle/up`, { method: 'PUT', headers: { 'Content-Length': '100000' } }, (res) =>
        resolve(`status ${res.statusCode}`),
      );
      req.on('error', () => resolve('closed'));
      req.write(randomBytes(1000));
    });
    expect(outcome).toBe('closed');
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await request(a.url).head('/media/idle/up')).status).toBe(404);
  });

  it('lists a narrow prefix with an index, whatever the number of rows', async () => {
    await sql.query(`INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at)
      SELECT 'bulk/' || lpad(g::text, 6, '0'), 1, repeat('a', 64), 'text/plain', 'primary', now() FROM generate_series(1, 20000) g`);
    await sql.query('ANALYZE media_objects');
    const { rows } = await sql.query(
      `EXPLAIN SELECT key FROM media_objects o WHERE o.key COLLATE "C" >= 'bulk/0123' AND o.key COLLATE "C" < 'bulk/0123\x7f' AND o.deleted_at IS NULL ORDER BY o.key COLLATE "C" LIMIT 100`,
    );
    const plan = rows.map((r: Record<string, string>) => Object.values(r)[0]).join('\n');
    expect(plan).toMatch(/Index (Only )?Scan using media_objects_key_c_idx/);
    const res = await request(a.url).get('/media').query({ prefix: 'bulk/0123', limit: '1000' });
    expect(res.body.items).toHaveLength(100);
    await sql.query(`DELETE FROM media_objects WHERE key LIKE 'bulk/%'`);
  });

  it('sync copies more than 1,000 objects (past a page of the plan and of the bucket listing) from what the metadata says', async () => {
    // Seeded below the API (content under versions, rows in the tables) to keep the test fast.
    const store = a.service.objectStores.get('primary')!;
    const ids = Array.from({ length: 1050 }, () => randomUUID());
    const queue = ids.map((id, i) => ({ id, i }));
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let item = queue.shift(); item; item = queue.shift()) {
          const body = `object ${item.i}`;
          await store.put(`v/${item.id}`, Readable.from([Buffer.from(body)]), body.length, 'text/plain');
        }
      }),
    );
    await sql.query(
      `WITH src AS (SELECT id::uuid AS id, 'many/' || lpad(i::text, 4, '0') AS key, 'object ' || i AS body FROM unnest($1::text[]) WITH ORDINALITY AS t(id, n), LATERAL (SELECT (n - 1)::int AS i) x),
       v AS (INSERT INTO media_versions (id, key, size, sha256, content_type, backends) SELECT id, key, length(body), encode(sha256(body::bytea), 'hex'), 'text/plain', ARRAY['primary'] FROM src)
       INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at, version) SELECT key, length(body), encode(sha256(body::bytea), 'hex'), 'text/plain', 'primary', now(), id FROM src`,
      [ids],
    );
    const t0 = Date.now();
    const res = await request(a.url).post('/admin/media/sync').set(auth).send({ from: 'primary', to: 'backup' });
    console.log(`sync of ${res.body.copied} objects: ${Date.now() - t0} ms`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'succeeded', failed: [] });
    expect(res.body.copied).toBeGreaterThanOrEqual(1050);
    let listed = 0;
    for await (const o of b.service.objectStores.get('backup')!.list('v/')) if (o) listed += 1;
    expect(listed).toBeGreaterThanOrEqual(1050);
    expect((await getRaw(`${b.url}/media/many/0777`)).body.toString()).toBe('object 777');
    // Nothing left to copy: the metadata records every copy.
    expect(
      (await request(a.url).post('/admin/media/sync').set(auth).send({ from: 'primary', to: 'backup', dryRun: true })).body.toCopy,
    ).toBe(0);
  }, 400_000);

  it('objects of the old layout keep working and `npm run media:migrate-layout` moves them to versions', async () => {
    const store = a.service.objectStores.get('primary')!;
    await store.put('legacy/one', Readable.from([Buffer.from('old layout')]), 10, 'text/plain');
    await sql.query(
      `INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at) VALUES ('legacy/one', 10, $1, 'text/plain', 'primary', now())`,
      [sha256Hex('old layout')],
    );
    expect((await getRaw(`${a.url}/media/legacy/one`)).body.toString()).toBe('old layout');
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/media-migrate-layout.ts'], {
        cwd: join(__dirname, '..', '..'),
        env: {
          PATH: process.env.PATH ?? '',
          DATABASE_URL: world.db.url,
          LOG_LEVEL: 'warn',
          ...mediaEnv('PRIMARY', world.s3),
          ...mediaEnv('BACKUP', world.s3Backup!),
        },
      });
      let stdout = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.on('exit', (code) => resolve({ code, stdout }));
    });
    expect({ code: out.code, report: JSON.parse(out.stdout || '{}') }).toMatchObject({ code: 0, report: { migrated: 1, failed: [] } });
    const { rows } = await sql.query(`SELECT version::text AS version FROM media_objects WHERE key = 'legacy/one'`);
    expect(rows[0].version).toMatch(/^[0-9a-f-]{36}$/);
    expect(await store.stat('legacy/one')).toBeUndefined();
    await eventually(
      async () => (await getRaw(`${b.url}/media/legacy/one`)).body.toString(),
      (t) => t === 'old layout',
      5000,
    );
    expect((await getRaw(`${b.url}/media/legacy/one`)).etag).toBe(`"${sha256Hex('old layout')}"`);
  }, 60_000);
});

describe('bounded S3 sockets', () => {
  it('downloads whose clients never read cannot exhaust the pool: beyond it, 503 with Retry-After, /health/media degraded; the idle timeout frees them', async () => {
    const db = await ownDatabase();
    const s3 = await startS3Server({ bucket: 'sat-primary' });
    const api = await startInstance({
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', s3),
      MEDIA_S3_POOL_SIZE: '2',
      MEDIA_IDLE_BODY_TIMEOUT_MS: '1500',
      MEDIA_MAX_BYTES: String(64 << 20),
    });
    const stalled: http.ClientRequest[] = [];
    try {
      await request(api.url)
        .put('/media/big/one')
        .send(randomBytes(24 << 20))
        .expect(201);
      for (let i = 0; i < 2; i += 1) {
        await new Promise<void>((resolve) => {
          const req = http.get(`${api.url}/media/big/one`, (res) => {
            res.pause(); // never reads
            resolve();
          });
          stalled.push(req);
        });
      }
      const refused = await request(api.url).get('/media/big/one');
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe('media_saturated');
      expect(refused.headers['retry-after']).toBeDefined();
      api.service.health.invalidate();
      const health = await request(api.url).get('/health/media');
      expect(health.body).toMatchObject({ status: 'degraded', saturated: ['primary.download'] });
      // Uploads have a pool of their own; stalled uploads saturate it, not the downloads'.
      expect((await request(api.url).put('/media/small/one').send('x')).status).toBe(201);
      for (let i = 0; i < 2; i += 1) {
        const req = http.request(`${api.url}/media/stalled/${i}`, { method: 'PUT', headers: { 'Content-Length': '100000' } });
        req.on('error', () => undefined);
        req.write(randomBytes(1000));
        stalled.push(req);
      }
      await new Promise((r) => setTimeout(r, 300));
      const upRefused = await request(api.url).put('/media/small/two').send('y');
      expect(upRefused.status).toBe(503);
      expect(upRefused.body.error.code).toBe('media_saturated');
      await eventually(
        async () => (await request(api.url).get('/media/small/one')).status,
        (s) => s === 200,
        6000,
      );
    } finally {
      for (const req of stalled) req.destroy();
      await api.stop();
      await s3.destroy();
      await db.drop();
    }
  }, 60_000);
});

describe('honest answers under faults', () => {
  it('after a switch away from a hung primary, reads are served by the backup at once, and an object only on the hung store answers 503 within the S3 timeout', async () => {
    const db = await ownDatabase();
    const primary = await startS3Server({ bucket: 'hang-primary' });
    const backup = await startS3Server({ bucket: 'hang-backup' });
    const proxy = await startTcpProxy(primary.port);
    const viaProxy = { ...primary, endpoint: `http://127.0.0.1:${proxy.port}`, port: proxy.port };
    const api = await startInstance({
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', viaProxy),
      ...mediaEnv('BACKUP', backup),
      MEDIA_S3_TIMEOUT_MS: '800',
      HEALTH_INTERVAL_MS: '200',
    });
    try {
      await request(api.url).put('/media/hang/both').send('on both').expect(201);
      await request(api.url).put('/media/hang/only-primary').send('only here').expect(201);
      expect((await request(api.url).post('/admin/media/sync').set(auth).send({ from: 'primary', to: 'backup' })).body.status).toBe(
        'succeeded',
      );
      // The second object is overwritten on the primary alone after the sync.
      await request(api.url).put('/media/hang/only-primary').send('only here, v2').expect(201);
      proxy.setMode('hang');
      await eventually(
        async () => (await request(api.url).get('/metrics')).text,
        (t) => t.includes('sav3_dependency_up{dependency="media",target="primary"} 0'),
        5000,
      );
      expect((await request(api.url).post('/admin/media/switch').set(auth).send({ to: 'backup' })).status).toBe(200);
      let t = Date.now();
      const both = await request(api.url).get('/media/hang/both');
      expect(both.status).toBe(200);
      expect(both.headers['x-media-backend']).toBe('backup');
      expect(Date.now() - t).toBeLessThan(400);
      t = Date.now();
      const only = await request(api.url).get('/media/hang/only-primary');
      expect(only.status).toBe(503);
      expect(only.headers['retry-after']).toBeDefined();
      expect(Date.now() - t).toBeLessThan(800 + 1500);
      expect((await request(api.url).head('/media/hang/only-primary')).status).toBe(200);
    } finally {
      proxy.setMode('pass');
      await api.stop();
      await proxy.close();
      await primary.destroy();
      await backup.destroy();
      await db.drop();
    }
  }, 60_000);

  it('an overwrite made while Redis is unreachable is served, not the cached old version, as soon as it is acknowledged', async () => {
    const db = await ownDatabase();
    const s3 = await startS3Server({ bucket: 'redis-gap' });
    const redis = await startOwnRedis();
    const proxy = await startTcpProxy(redis.port);
    const prefix = uniquePrefix();
    const env = {
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', s3),
      REDIS_URL: `redis://127.0.0.1:${proxy.port}`,
      MEDIA_CACHE_TTL_SECONDS: '2',
    };
    const a = await startInstance({ ...env, INSTANCE_ID: 'gap-a' }, prefix);
    const b = await startInstance({ ...env, INSTANCE_ID: 'gap-b' }, prefix);
    try {
      await request(a.url).put('/media/gap/k').send('old').expect(201);
      expect((await getRaw(`${b.url}/media/gap/k`)).body.toString()).toBe('old'); // cached
      proxy.setMode('refuse'); // a partition: Redis keeps its data
      await new Promise((r) => setTimeout(r, 300));
      await request(a.url).put('/media/gap/k').send('new').expect(201);
      // The writer waited out the TTL: B (which reads Redis again once it is back) has nothing older.
      proxy.setMode('pass');
      const served = await eventually(
        async () => (await getRaw(`${b.url}/media/gap/k`)).body.toString(),
        (body) => body === 'new',
        8000,
      );
      expect(served).toBe('new');
    } finally {
      await a.stop();
      await b.stop();
      await proxy.close();
      await redis.stop();
      await s3.destroy();
      await db.drop();
    }
  }, 60_000);
});
