import type { MediaBackendName } from '../../src/domain.ts';
import { PassThrough, Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { AppError } from '../../src/http/app-error.ts';
import { updatingCache } from '../../src/services/media/media-cache.ts';
import { MediaService } from '../../src/services/media/media-service.ts';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { UploadSpool } from '../../src/services/media/upload-spool.ts';
import { MemoryMediaCache, MemoryMediaRepository, MemoryObjectStore } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';
import { sha256Hex } from '../../support/common.ts';

function setup(maxBytes = 1024, spool = { maxConcurrent: 4, maxBytes: 1 << 20 }) {
  const primary = new MemoryObjectStore('primary');
  const backup = new MemoryObjectStore('backup');
  const repository = new MemoryMediaRepository();
  const cache = new MemoryMediaCache();
  const down = new Set<MediaBackendName>();
  let active: MediaBackendName = 'primary';
  const service = new MediaService({
    repository: updatingCache(repository, cache),
    cache,
    stores: new Map<MediaBackendName, ObjectStore>([
      ['primary', primary],
      ['backup', backup],
    ]),
    activeBackend: () => active,
    backendDown: (b) => down.has(b),
    gcGraceMs: 60_000,
    spool: new UploadSpool(spool),
    maxBytes,
    logger: captureLogger().logger,
  });
  return { service, primary, backup, repository, cache, down, activate: (b: MediaBackendName) => (active = b) };
}

const body = (s: string) => ({ body: Readable.from([Buffer.from(s)]), contentType: undefined, declaredLength: Buffer.byteLength(s) });

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
  it('stores content under a fresh version name, never the key, and points the key at it', async () => {
    const { service, primary, repository, cache } = setup();
    const meta = await service.upload({
      key: 'a/b.txt',
      body: Readable.from([Buffer.from('hello')]),
      contentType: 'text/plain',
      declaredLength: 5,
    });
    expect(meta).toMatchObject({
      key: 'a/b.txt',
      size: 5,
      sha256: sha256Hex('hello'),
      backend: 'primary',
      contentType: 'text/plain',
      version: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(primary.objects.has('a/b.txt')).toBe(false);
    expect(primary.objects.get(`v/${meta.version}`)?.body.toString()).toBe('hello');
    expect(repository.rows.get('a/b.txt')).toEqual(meta);
    expect(await cache.get('a/b.txt')).toEqual(meta);
  });

  it('an overwrite writes a new version; the old one stays until collected', async () => {
    const { service, primary } = setup();
    const first = await service.upload({ key: 'k', ...body('one') });
    const second = await service.upload({ key: 'k', ...body('two!') });
    expect(second.version).not.toBe(first.version);
    expect(primary.objects.get(`v/${first.version}`)?.body.toString()).toBe('one');
    expect(await text((await service.download('k')).stream)).toBe('two!');
  });

  it('streams: the store receives the first chunk before the client has sent the last', async () => {
    const { service, primary } = setup();
    const stream = new PassThrough();
    const upload = service.upload({ key: 'stream.bin', body: stream, contentType: undefined, declaredLength: 8 });
    stream.write(Buffer.from('abcd'));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(primary.chunksBeforeEnd).toEqual([4]);
    stream.end(Buffer.from('efgh'));
    await expect(upload).resolves.toMatchObject({ size: 8, contentType: 'application/octet-stream' });
  });

  it('refuses a declared length over the limit before reading the body, and a chunked body that grows past it', async () => {
    const { service, repository } = setup(10);
    expect(await statusOf(service.upload({ key: 'big', body: Readable.from([]), contentType: undefined, declaredLength: 11 }))).toBe(413);
    const chunks = [Buffer.alloc(6), Buffer.alloc(6)];
    expect(
      await statusOf(service.upload({ key: 'big', body: Readable.from(chunks), contentType: undefined, declaredLength: undefined })),
    ).toBe(413);
    expect(repository.rows.size).toBe(0);
  });

  it('bounds spooled (chunked) uploads in number and bytes: beyond either, 503 and nothing stored', async () => {
    const { service, repository } = setup(1 << 20, { maxConcurrent: 1, maxBytes: 100 });
    const stalled = new PassThrough();
    const first = service.upload({ key: 'a', body: stalled, contentType: undefined, declaredLength: undefined });
    stalled.write(Buffer.alloc(10));
    await new Promise((r) => setTimeout(r, 10));
    expect(
      await statusOf(
        service.upload({ key: 'b', body: Readable.from([Buffer.alloc(5)]), contentType: undefined, declaredLength: undefined }),
      ),
    ).toBe(503);
    stalled.end(Buffer.alloc(200));
    expect(await statusOf(first)).toBe(503);
    expect(repository.rows.size).toBe(0);
    expect(
      await statusOf(
        service.upload({ key: 'c', body: Readable.from([Buffer.alloc(50)]), contentType: undefined, declaredLength: undefined }),
      ),
    ).toBe(200);
  });

  it.each(['../etc/passwd', 'a/../b', '/lead', 'trail/', 'a//b', 'sp ace', 'x'.repeat(513), '', 'ü'])(
    'rejects bad key #%# with 400',
    async (key) => {
      const { service } = setup();
      expect(await statusOf(service.upload({ key, body: Readable.from([]), contentType: undefined, declaredLength: 0 }))).toBe(400);
    },
  );

  it('an overwrite refused because the database is down (503) keeps the earlier acknowledged version', async () => {
    const { service, repository } = setup();
    await service.upload({ key: 'k', ...body('acked') });
    repository.failWith = new Error('connect ECONNREFUSED');
    expect(await statusOf(service.upload({ key: 'k', ...body('refused') }))).toBe(503);
    repository.failWith = undefined;
    expect(await text((await service.download('k')).stream)).toBe('acked');
  });

  it('a commit whose answer was lost but which was applied answers 201, not a false refusal', async () => {
    const { service, repository } = setup();
    repository.loseAnswer = true;
    const meta = await service.upload({ key: 'k', ...body('applied') });
    repository.loseAnswer = false;
    expect(meta.sha256).toBe(sha256Hex('applied'));
    expect(repository.rows.get('k')?.version).toBe(meta.version);
  });

  it('a commit whose answer was lost and whose key moved on since is acknowledged without caching a seq-0 entry', async () => {
    const { service, repository, cache } = setup();
    const old = await service.upload({ key: 'k', ...body('old') });
    const find = repository.find.bind(repository);
    // Another write moves the pointer on between the lost answer and the look-up.
    repository.find = async (key) => ({ ...(await find(key))!, version: '00000000-0000-4000-8000-000000000099', seq: 99 });
    repository.loseAnswer = true;
    const meta = await service.upload({ key: 'k', ...body('applied') });
    expect(meta.seq).toBe(0);
    expect(cache.invalidated).toEqual(['k']);
    // The entry naming the replaced version is gone, and no seq-0 entry took its place.
    expect(cache.entries.has('k')).toBe(false);
    expect(old.seq).toBeGreaterThan(0);
  });

  it('a PUT or DELETE whose outcome is unknown invalidates the cached entry before answering 503', async () => {
    const { service, repository, cache } = setup();
    await service.upload({ key: 'k', ...body('x') });
    await service.upload({ key: 'd', ...body('y') });
    repository.failWith = new Error('Connection terminated unexpectedly');
    expect(await statusOf(service.upload({ key: 'k', ...body('maybe') }))).toBe(503);
    expect(await statusOf(service.remove('d'))).toBe(503);
    expect(cache.invalidated).toEqual(['k', 'd']);
    expect(cache.entries.has('k')).toBe(false);
    expect(cache.entries.has('d')).toBe(false);
  });

  it('answers 503 when the active backend is down', async () => {
    const { service, primary } = setup();
    primary.failWith = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(await statusOf(service.upload({ key: 'k', ...body('x') }))).toBe(503);
  });

  it('reads a version from whichever backend holds it', async () => {
    const { service, primary, backup, activate } = setup();
    const meta = await service.upload({ key: 'k', ...body('on primary') });
    activate('backup');
    primary.failWith = new Error('connect ECONNREFUSED');
    backup.objects.set(`v/${meta.version}`, { body: Buffer.from('on primary'), contentType: 'application/octet-stream' });
    const content = await service.download('k');
    expect(content.servedBy).toBe('backup');
    expect(await text(content.stream)).toBe('on primary');
  });

  it('answers 503 (not 404) when the only backend holding the object is unreachable', async () => {
    const { service, primary, activate } = setup();
    await service.upload({ key: 'k', ...body('x') });
    activate('backup');
    primary.failWith = new Error('connect ECONNREFUSED');
    expect(await statusOf(service.download('k'))).toBe(503);
  });

  it('does not contact a backend the probes know is down while another holds the version', async () => {
    const { service, primary, backup, down } = setup();
    const meta = await service.upload({ key: 'k', ...body('x') });
    backup.objects.set(`v/${meta.version}`, { body: Buffer.from('x'), contentType: 'application/octet-stream' });
    let calls = 0;
    const get = primary.get.bind(primary);
    primary.get = async (name: string) => {
      calls += 1;
      return get(name);
    };
    down.add('primary');
    expect((await service.download('k')).servedBy).toBe('backup');
    expect(calls).toBe(0);
  });

  it('never serves a deleted object from the cache; a stale cached version falls back to the database', async () => {
    const { service, cache, primary } = setup();
    const first = await service.upload({ key: 'k', ...body('x') });
    await service.remove('k');
    expect(await statusOf(service.metadata('k'))).toBe(404);
    expect(await statusOf(service.download('k'))).toBe(404);
    // A cache left with an old version whose content was collected: the database answers.
    await service.upload({ key: 'k', ...body('new') });
    cache.entries.set('k', { seq: 1e9, value: first });
    primary.objects.delete(`v/${first.version}`);
    expect(await text((await service.download('k')).stream)).toBe('new');
  });

  it('a delete refused because the database is down changes nothing, cache included', async () => {
    const { service, repository } = setup();
    await service.upload({ key: 'k', ...body('x') });
    repository.failWith = new Error('connect ECONNREFUSED');
    expect(await statusOf(service.remove('k'))).toBe(503);
    repository.failWith = undefined;
    expect(await statusOf(service.metadata('k'))).toBe(200);
    expect(await text((await service.download('k')).stream)).toBe('x');
  });

  it('serves metadata from the cache while the database is down', async () => {
    const { service, repository } = setup();
    await service.upload({ key: 'k', ...body('x') });
    repository.failWith = new Error('connect ECONNREFUSED');
    await expect(service.metadata('k')).resolves.toMatchObject({ key: 'k', size: 1 });
    expect(await statusOf(service.metadata('other'))).toBe(503);
  });
});
