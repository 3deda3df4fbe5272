import http from 'node:http';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, ownDatabase, startInstance, type TestInstance } from '../support/instance.ts';
import { eventually, sleep } from '../../support/common.ts';

interface Trickle {
  /** The answer, or the connection error if none came. */
  answer: Promise<{ status: number; code?: string; at: number } | { error: string; at: number }>;
  stop(): void;
}

/** An upload that sends `bytes` every `everyMs`: never idle, far below any reasonable rate. */
function trickle(base: string, key: string, opts: { bytes: number; everyMs: number; chunked?: boolean }): Trickle {
  const size = 1024 * 1024;
  const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
  if (!opts.chunked) headers['Content-Length'] = String(size);
  const req = http.request(new URL(`/media/${key}`, base), { method: 'PUT', headers, agent: false });
  let sent = 0;
  const timer = setInterval(() => {
    if (sent + opts.bytes > size) return;
    sent += opts.bytes;
    req.write(Buffer.alloc(opts.bytes, 1));
  }, opts.everyMs);
  const answer = new Promise<{ status: number; code?: string; at: number } | { error: string; at: number }>((resolve) => {
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      const done = () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, code, at: Date.now() });
      };
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.on('error', (err) => resolve({ error: err.message, at: Date.now() }));
  });
  void answer.then(() => clearInterval(timer));
  return {
    answer,
    stop() {
      clearInterval(timer);
      req.destroy();
    },
  };
}

/**
 * Issue 9 F6: a client that sends one byte now and then keeps the idle-body timer quiet and holds
 * its upload slot (an S3 socket, or a spool slot) for as long as it likes; a few such clients
 * starve every upload. An upload must average MEDIA_MIN_UPLOAD_BYTES_PER_SEC over each window
 * (after the first), or it is answered 408 and its slot freed. Real S3 server and PostgreSQL.
 */
describe('uploads below the minimum transfer rate are cut with 408 and free their slot', () => {
  let db: Awaited<ReturnType<typeof ownDatabase>>;
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    db = await ownDatabase();
    s3 = await startS3Server({ bucket: 'slow-primary' });
    api = await startInstance({
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', s3),
      MEDIA_S3_POOL_SIZE: '2',
      MEDIA_SPOOL_MAX_CONCURRENT: '1',
      MEDIA_IDLE_BODY_TIMEOUT_MS: '30000',
      MEDIA_MIN_UPLOAD_BYTES_PER_SEC: '1024',
      MEDIA_MIN_UPLOAD_RATE_WINDOW_MS: '1500',
    });
  });
  afterAll(async () => {
    await api?.stop();
    await s3?.destroy();
    await db?.drop();
  });

  it('trickling uploads (Content-Length and chunked) that hold every S3 upload socket get 408 within the window, then uploads work again', async () => {
    const started = Date.now();
    const slow = [
      trickle(api.url, 'slow/a', { bytes: 10, everyMs: 100 }),
      trickle(api.url, 'slow/b', { bytes: 10, everyMs: 100 }),
      trickle(api.url, 'slow/c', { bytes: 10, everyMs: 100, chunked: true }),
    ];
    try {
      await sleep(500);
      // Both S3 upload sockets (and the spool slot) are held by the trickles.
      expect((await request(api.url).put('/media/slow/during').send('x'.repeat(100))).status).toBe(503);
      const answers = await Promise.all(slow.map((t) => t.answer));
      for (const a of answers) {
        // Before: no answer at all (the test's 30 s bound ends it); the slots stay held.
        expect(a).toMatchObject({ status: 408, code: 'upload_too_slow' });
        expect(a.at - started).toBeLessThan(6000);
      }
    } finally {
      for (const t of slow) t.stop();
    }
    // The slots are free again, and nothing of the refused uploads was stored.
    // (The 408 is sent before the connection is cut: the slot is released a moment later.)
    const ok = await eventually(
      () => request(api.url).put('/media/slow/after').send('y'.repeat(100)),
      (r) => r.status !== 503,
      3000,
      50,
    );
    expect(ok.status).toBe(201);
    for (const key of ['slow/a', 'slow/b', 'slow/c']) expect((await request(api.url).head(`/media/${key}`)).status).toBe(404);
  }, 30_000);

  it('an upload that is slow at first but keeps above the rate completes', async () => {
    const body = Buffer.alloc(16 * 1024, 7);
    const res = await new Promise<number>((resolve, reject) => {
      const req = http.request(new URL('/media/slow/steady', api.url), {
        method: 'PUT',
        headers: { 'Content-Length': String(body.length) },
        agent: false,
      });
      req.on('response', (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      });
      req.on('error', reject);
      // 4 KiB every 500 ms: 8 KiB/s, across more than one window.
      let i = 0;
      const timer = setInterval(() => {
        const part = body.subarray(i * 4096, (i + 1) * 4096);
        i += 1;
        if (i >= 4) {
          clearInterval(timer);
          req.end(part);
        } else req.write(part);
      }, 500);
    });
    expect(res).toBe(201);
  });
});
