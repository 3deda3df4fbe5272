import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { MinioObjectStore } from '../../src/adapters/minio-object-store.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('the test S3 server behaves like S3 where the media invariants depend on it', () => {
  let s3: S3ServerHandle;
  let store: MinioObjectStore;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 's3-it' });
    store = new MinioObjectStore({
      name: 'primary',
      endpoint: s3.endpoint,
      accessKey: s3.accessKey,
      secretKey: s3.secretKey,
      bucket: s3.bucket,
      region: 'us-east-1',
    });
  });
  afterAll(async () => {
    store.close();
    await s3.destroy();
  });

  it('an overwrite in progress is invisible: readers see the whole old body until the new one is complete', async () => {
    const old = randomBytes(64 * 1024);
    await store.put('atomic/obj', Readable.from([old]), old.length, 'application/octet-stream');
    const next = randomBytes(256 * 1024);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = Readable.from(
      (async function* () {
        yield next.subarray(0, 100_000);
        await gate;
        yield next.subarray(100_000);
      })(),
    );
    const putting = store.put('atomic/obj', slow, next.length, 'application/octet-stream');
    await new Promise((r) => setTimeout(r, 200));
    expect((await readAll(await store.get('atomic/obj'))).equals(old)).toBe(true);
    expect((await store.stat('atomic/obj'))?.size).toBe(old.length);
    release();
    await putting;
    expect((await readAll(await store.get('atomic/obj'))).equals(next)).toBe(true);
  });

  it('an aborted PUT publishes nothing', async () => {
    const url = new URL(
      await (
        store as unknown as { client: { presignedPutObject(b: string, k: string, s: number): Promise<string> } }
      ).client.presignedPutObject(s3.bucket, 'atomic/aborted', 60),
    );
    await new Promise<void>((resolve) => {
      const req = http.request({
        hostname: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: 'PUT',
        headers: { 'Content-Length': '100000' },
      });
      req.on('error', () => resolve());
      req.write(randomBytes(40_000));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 150);
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(await store.stat('atomic/aborted')).toBeUndefined();
    const names: string[] = [];
    for await (const o of store.list('atomic/')) names.push(o.key);
    expect(names).toEqual(['atomic/obj']);
  });

  it('lists past 1,000 objects, page after page, in key order', async () => {
    const keys = Array.from({ length: 2100 }, (_, i) => `many/${String(i).padStart(5, '0')}`);
    const queue = [...keys];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let k = queue.shift(); k; k = queue.shift()) await store.put(k, Readable.from([Buffer.from(k)]), k.length, 'text/plain');
      }),
    );
    const listed: string[] = [];
    for await (const o of store.list('many/')) listed.push(o.key);
    expect(listed).toEqual(keys);
  }, 120_000); // 2,100 PUTs: seconds on a quiet machine, more than 30 s on a loaded one

  it('checks a bucket (HEAD, the health probe) without listing it, however many objects it holds', async () => {
    // Runs after the listing test: the bucket holds more than 2,000 objects.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const FilesystemStore = require('s3rver/lib/stores/filesystem') as { prototype: { listObjects(...args: unknown[]): unknown } };
    const listings = jest.spyOn(FilesystemStore.prototype, 'listObjects');
    try {
      for (let i = 0; i < 5; i += 1) await expect(store.checkBucket(2000)).resolves.toBeUndefined();
      expect(listings).not.toHaveBeenCalled();
      // The spy sees listings: a GET of the bucket is one.
      for await (const o of store.list('many/00000')) expect(o.key).toBe('many/00000');
      expect(listings).toHaveBeenCalledTimes(1);
    } finally {
      listings.mockRestore();
    }
  });
});
