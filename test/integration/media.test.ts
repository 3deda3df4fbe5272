import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { putChunked } from '../support/http.ts';
import { mediaEnv, startInstance, type TestInstance } from '../support/instance.ts';
import { sha256Hex } from '../../support/common.ts';

describe('media API against PostgreSQL, Redis and an S3 server', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  const run = randomBytes(3).toString('hex');
  const key = (name: string) => `it-${run}/${name}`;
  const versionOf = async (k: string) => {
    const rows = await api.service.databaseClients
      .client()
      .$queryRawUnsafe<{ version: string }[]>('SELECT version::text AS version FROM media_objects WHERE key = $1', k);
    return rows[0]?.version;
  };

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'media-it' });
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), MEDIA_MAX_BYTES: String(1024 * 1024), MEDIA_GC_GRACE_SECONDS: '2' });
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('PUT stores the body and answers 201 with key, size, sha256, contentType, backend, createdAt', async () => {
    const body = randomBytes(200_000);
    const res = await request(api.url)
      .put(`/media/${key('photo.png')}`)
      .set('Content-Type', 'image/png')
      .send(body);
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      key: key('photo.png'),
      size: 200_000,
      sha256: sha256Hex(body),
      contentType: 'image/png',
      backend: 'primary',
      createdAt: expect.any(String),
    });
    expect(res.headers.location).toBe(`/media/${key('photo.png')}`);
    // Content lives under an immutable version name, never under the user's key.
    const version = await versionOf(key('photo.png'));
    expect(version).toMatch(/^[0-9a-f-]{36}$/);
    expect((await api.service.objectStores.get('primary')!.stat(`v/${version}`))?.size).toBe(200_000);
    expect(await api.service.objectStores.get('primary')!.stat(key('photo.png'))).toBeUndefined();
  });

  it('GET streams back exactly the bytes, with type, length and sha256 ETag; HEAD gives the headers alone', async () => {
    const body = randomBytes(50_000);
    await request(api.url)
      .put(`/media/${key('doc.bin')}`)
      .set('Content-Type', 'application/pdf')
      .send(body)
      .expect(201);
    const res = await request(api.url)
      .get(`/media/${key('doc.bin')}`)
      .buffer(true)
      .parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => cb(null, Buffer.concat(chunks)));
      });
    expect(res.status).toBe(200);
    expect(sha256Hex(res.body as Buffer)).toBe(sha256Hex(body));
    expect(res.headers['content-type']).toBe('application/pdf');
    expect(res.headers['content-length']).toBe('50000');
    expect(res.headers.etag).toBe(`"${sha256Hex(body)}"`);
    expect(res.headers['x-media-backend']).toBe('primary');
    const head = await request(api.url).head(`/media/${key('doc.bin')}`);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('50000');
  });

  it('accepts a chunked upload without Content-Length', async () => {
    const body = randomBytes(70_000);
    const res = await putChunked(api.url, `/media/${key('chunked.bin')}`, [body.subarray(0, 30_000), body.subarray(30_000)]);
    expect(res.status).toBe(201);
    expect(res.headers['transfer-encoding']).toBeUndefined();
    expect(JSON.parse(res.body)).toMatchObject({ size: 70_000, sha256: sha256Hex(body), contentType: 'application/octet-stream' });
  });

  it('answers 413 for a body over MEDIA_MAX_BYTES, declared or chunked, and stores nothing', async () => {
    const big = randomBytes(1024 * 1024 + 1);
    const declared = await request(api.url)
      .put(`/media/${key('big1')}`)
      .send(big);
    expect(declared.status).toBe(413);
    expect(declared.body.error).toMatchObject({ code: 'payload_too_large', requestId: expect.any(String) });
    const chunked = await putChunked(api.url, `/media/${key('big2')}`, [big.subarray(0, 600_000), big.subarray(600_000)]);
    expect(chunked.status).toBe(413);
    expect((await request(api.url).get(`/media/${key('big2')}`)).status).toBe(404);
    expect(await api.service.objectStores.get('primary')!.stat(key('big2'))).toBeUndefined();
  });

  it.each([
    ['a dot-dot segment', 'a/../b'],
    ['a space', 'with%20space'],
    ['an encoded slash trick', '..%2Fetc'],
    ['a 513-character key', 'k'.repeat(513)],
  ])('answers 400 with details for %s', async (_label, bad) => {
    const res = await request(api.url).put(`/media/${bad}`).send('x');
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'bad_request', details: { key: expect.any(Array) } });
  });

  it('answers 400 for a malformed Content-Type', async () => {
    const res = await request(api.url)
      .put(`/media/${key('ct')}`)
      .set('Content-Type', 'not a type')
      .send('x');
    expect(res.status).toBe(400);
  });

  it('DELETE removes metadata and cache at once (GET and HEAD 404), and the content after the grace period', async () => {
    await request(api.url)
      .put(`/media/${key('gone.txt')}`)
      .send('bye')
      .expect(201);
    const version = await versionOf(key('gone.txt'));
    await request(api.url)
      .get(`/media/${key('gone.txt')}`)
      .expect(200); // fills the cache
    expect((await request(api.url).delete(`/media/${key('gone.txt')}`)).status).toBe(204);
    expect((await request(api.url).get(`/media/${key('gone.txt')}`)).status).toBe(404);
    expect((await request(api.url).head(`/media/${key('gone.txt')}`)).status).toBe(404);
    expect((await request(api.url).delete(`/media/${key('gone.txt')}`)).status).toBe(404);
    const store = api.service.objectStores.get('primary')!;
    expect(await store.stat(`v/${version}`)).toBeDefined();
    await new Promise((r) => setTimeout(r, 2100));
    expect(await api.service.media.gc.collect()).toBeGreaterThanOrEqual(1);
    expect(await store.stat(`v/${version}`)).toBeUndefined();
  });

  it('lists by prefix with a limit and a cursor', async () => {
    for (const n of ['l1', 'l2', 'l3'])
      await request(api.url)
        .put(`/media/${key(`list/${n}`)}`)
        .send(n)
        .expect(201);
    const first = await request(api.url)
      .get('/media')
      .query({ prefix: key('list/'), limit: '2' });
    expect(first.status).toBe(200);
    expect(first.body.items.map((i: { key: string }) => i.key)).toEqual([key('list/l1'), key('list/l2')]);
    expect(first.body.nextAfter).toBe(key('list/l2'));
    const rest = await request(api.url)
      .get('/media')
      .query({ prefix: key('list/'), limit: '2', after: first.body.nextAfter });
    expect(rest.body.items.map((i: { key: string }) => i.key)).toEqual([key('list/l3')]);
    expect(rest.body.nextAfter).toBeNull();
  });

  it('rejects bad list parameters with per-field details', async () => {
    const res = await request(api.url).get('/media').query({ limit: '5000', prefix: '../', extra: '1' });
    expect(res.status).toBe(400);
    expect(Object.keys(res.body.error.details).sort()).toEqual(['extra', 'limit']);
  });

  it('keeps the request id from x-request-id in the answer and the error body', async () => {
    const res = await request(api.url)
      .get(`/media/${key('missing')}`)
      .set('X-Request-Id', 'trace-abc-123');
    expect(res.status).toBe(404);
    expect(res.headers['x-request-id']).toBe('trace-abc-123');
    expect(res.body.error.requestId).toBe('trace-abc-123');
  });

  it('when the S3 server is stopped, uploads answer 503 and no metadata is left behind', async () => {
    await s3.stop();
    try {
      const res = await request(api.url)
        .put(`/media/${key('while-down')}`)
        .send('x');
      expect(res.status).toBe(503);
      expect(res.body.error).toMatchObject({ code: 'dependency_unavailable', dependency: 'media' });
      expect(JSON.stringify(res.body)).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
      expect((await request(api.url).get(`/media/${key('while-down')}`)).status).toBe(404);
      // A body still streaming when S3 fails is answered 503 too, never a reset connection (found by
      // an outside attack: the streaming upload destroyed the request's socket with it).
      const big = await request(api.url)
        .put(`/media/${key('big-while-down')}`)
        .set('Content-Type', 'application/octet-stream')
        .send(Buffer.alloc(1024 * 1024, 7));
      expect(big.status).toBe(503);
      expect(big.body.error).toMatchObject({ code: 'dependency_unavailable' });
      expect(big.headers['retry-after']).toBeDefined();
    } finally {
      await s3.start();
    }
  });
});
