import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import type { MediaBackendName } from '../../src/config/config.ts';
import { AppError } from '../../src/http/app-error.ts';
import { MediaService } from '../../src/media/media-service.ts';
import type { ObjectStore } from '../../src/media/object-store.ts';
import { MemoryMediaCache, MemoryMediaRepository, MemoryObjectStore } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

function setup(maxBytes = 1024) {
  const primary = new MemoryObjectStore('primary');
  const backup = new MemoryObjectStore('backup');
  const repository = new MemoryMediaRepository();
  const cache = new MemoryMediaCache();
  let active: MediaBackendName = 'primary';
  const service = new MediaService({
    repository,
    cache,
    stores: new Map<MediaBackendName, ObjectStore>([
      ['primary', primary],
      ['backup', backup],
    ]),
    activeBackend: () => active,
    maxBytes,
    logger: captureLogger().logger,
  });
  return { service, primary, backup, repository, cache, switchTo: (b: MediaBackendName) => (active = b) };
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

async function statusOf(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AppError) return err.status;
    throw err;
  }
  return 200;
}

describe('MediaService', () => {
  it('stores content in the active backend and metadata with its sha256, size and backend', async () => {
    const { service, primary, repository, cache } = setup();
    const meta = await service.upload({ key: 'a/b.txt', body: Readable.from([Buffer.from('hello')]), contentType: 'text/plain', declaredLength: 5 });
    expect(meta).toMatchObject({ key: 'a/b.txt', size: 5, sha256: sha('hello'), backend: 'primary', contentType: 'text/plain' });
    expect(primary.objects.get('a/b.txt')?.body.toString()).toBe('hello');
    expect(repository.rows.get('a/b.txt')).toEqual(meta);
    expect(cache.entries.get('a/b.txt')).toEqual(meta);
  });

  it('streams: the store receives the first chunk before the client has sent the last', async () => {
    const { service, primary } = setup();
    const body = new PassThrough();
    const upload = service.upload({ key: 'stream.bin', body, contentType: undefined, declaredLength: 8 });
    body.write(Buffer.from('abcd'));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(primary.chunksBeforeEnd).toEqual([4]);
    body.end(Buffer.from('efgh'));
    await expect(upload).resolves.toMatchObject({ size: 8, contentType: 'application/octet-stream' });
  });

  it('refuses a declared length over the limit before reading the body, and a chunked body that grows past it', async () => {
    const { service, primary, repository } = setup(10);
    expect(await statusOf(service.upload({ key: 'big', body: Readable.from([]), contentType: undefined, declaredLength: 11 }))).toBe(413);
    const chunks = [Buffer.alloc(6), Buffer.alloc(6)];
    expect(await statusOf(service.upload({ key: 'big', body: Readable.from(chunks), contentType: undefined, declaredLength: undefined }))).toBe(413);
    expect(primary.objects.size).toBe(0);
    expect(repository.rows.size).toBe(0);
  });

  it.each(['../etc/passwd', 'a/../b', '/lead', 'trail/', 'a//b', 'sp ace', 'x'.repeat(513), '', 'ü'])('rejects bad key #%# with 400', async (key) => {
    const { service } = setup();
    expect(await statusOf(service.upload({ key, body: Readable.from([]), contentType: undefined, declaredLength: 0 }))).toBe(400);
  });

  it('removes the uploaded content when the metadata cannot be saved, and answers 503', async () => {
    const { service, primary, repository } = setup();
    repository.failWith = new Error('connect ECONNREFUSED');
    expect(await statusOf(service.upload({ key: 'k', body: Readable.from([Buffer.from('x')]), contentType: undefined, declaredLength: 1 }))).toBe(503);
    expect(primary.objects.size).toBe(0);
  });

  it('answers 503 when the active backend is down', async () => {
    const { service, primary } = setup();
    primary.failWith = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(await statusOf(service.upload({ key: 'k', body: Readable.from([Buffer.from('x')]), contentType: undefined, declaredLength: 1 }))).toBe(503);
  });

  it('reads an object from whichever backend holds it', async () => {
    const { service, primary, backup, switchTo } = setup();
    await service.upload({ key: 'k', body: Readable.from([Buffer.from('on primary')]), contentType: undefined, declaredLength: 10 });
    switchTo('backup');
    primary.failWith = new Error('connect ECONNREFUSED');
    backup.objects.set('k', { body: Buffer.from('on primary'), contentType: 'application/octet-stream' });
    const content = await service.download('k');
    expect(content.servedBy).toBe('backup');
    expect(await text(content.stream)).toBe('on primary');
  });

  it('never serves a deleted object from the cache', async () => {
    const { service, cache } = setup();
    await service.upload({ key: 'k', body: Readable.from([Buffer.from('x')]), contentType: undefined, declaredLength: 1 });
    expect(cache.entries.get('k')).toBeDefined();
    await service.remove('k');
    expect(await statusOf(service.metadata('k'))).toBe(404);
    expect(await statusOf(service.download('k'))).toBe(404);
  });

  it('refuses a delete it cannot record in the cache, and deletes nothing', async () => {
    const { service, cache, repository, primary } = setup();
    await service.upload({ key: 'k', body: Readable.from([Buffer.from('x')]), contentType: undefined, declaredLength: 1 });
    cache.down = true;
    expect(await statusOf(service.remove('k'))).toBe(503);
    expect(repository.rows.has('k')).toBe(true);
    expect(primary.objects.has('k')).toBe(true);
  });

  it('serves metadata from the cache while the database is down', async () => {
    const { service, repository } = setup();
    await service.upload({ key: 'k', body: Readable.from([Buffer.from('x')]), contentType: undefined, declaredLength: 1 });
    repository.failWith = new Error('connect ECONNREFUSED');
    await expect(service.metadata('k')).resolves.toMatchObject({ key: 'k', size: 1 });
    expect(await statusOf(service.metadata('other'))).toBe(503);
  });
});
