import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MediaBackendName } from '../config/config.ts';
import { AppError, BadRequestError, DependencyUnavailableError, NotFoundError, PayloadTooLargeError } from '../http/app-error.ts';
import type { Logger } from '../logger.ts';
import { HashingStream } from './hashing-stream.ts';
import type { MediaCache } from './media-cache.ts';
import { contentTypeSchema, mediaKeySchema } from './media-key.ts';
import type { MediaMetadata, MediaRepository } from './media-repository.ts';
import { ObjectMissingError, type ObjectStore } from './object-store.ts';

export interface UploadInput {
  key: string;
  body: Readable;
  contentType: string | undefined;
  /** Content-Length when the client sent one. */
  declaredLength: number | undefined;
}

export interface MediaContent {
  meta: MediaMetadata;
  /** The backend the bytes come from, which may differ from where they were written. */
  servedBy: MediaBackendName;
  stream: Readable;
}

export interface MediaServiceDeps {
  repository: MediaRepository;
  cache: MediaCache;
  stores: ReadonlyMap<MediaBackendName, ObjectStore>;
  /** The backend new uploads go to; read on every call so a switch applies at once. */
  activeBackend: () => MediaBackendName;
  maxBytes: number;
  logger: Logger;
  /** Called after an upload is stored and recorded (continuous backup hooks in here). */
  onStored?: (meta: MediaMetadata) => Promise<void>;
  now?: () => Date;
}

/** Media uploads and reads: content in the active object store, metadata in the repository. */
export class MediaService {
  constructor(private readonly deps: MediaServiceDeps) {}

  validateKey(key: string): string {
    const parsed = mediaKeySchema.safeParse(key);
    if (!parsed.success) throw new BadRequestError('invalid media key', { key: parsed.error.issues.map((i) => i.message) });
    return parsed.data;
  }

  async upload(input: UploadInput): Promise<MediaMetadata> {
    const key = this.validateKey(input.key);
    const contentType = input.contentType ?? 'application/octet-stream';
    if (!contentTypeSchema.safeParse(contentType).success) {
      throw new BadRequestError('invalid Content-Type', { contentType: ['must be a media type such as image/png'] });
    }
    const { maxBytes } = this.deps;
    if (input.declaredLength !== undefined && input.declaredLength > maxBytes) throw new PayloadTooLargeError(maxBytes);

    const backend = this.deps.activeBackend();
    const store = this.store(backend);
    const hasher = new HashingStream(maxBytes);
    try {
      if (input.declaredLength !== undefined) {
        const size = input.declaredLength;
        await Promise.all([pipeline(input.body, hasher), store.put(key, hasher, size, contentType)]);
      } else {
        await this.uploadUnsized(input.body, hasher, store, key, contentType);
      }
    } catch (err) {
      input.body.resume();
      throw this.storeError(err, backend);
    }

    const meta: MediaMetadata = { key, size: hasher.bytes, sha256: hasher.digest(), contentType, backend, createdAt: this.now() };
    try {
      await this.deps.repository.upsert(meta);
    } catch (err) {
      // Without its metadata row the object is unreachable: remove it rather than leave an orphan.
      await store.remove(key).catch(() => undefined);
      if (err instanceof AppError) throw err; // refused by the write barrier: keeps its own answer
      throw new DependencyUnavailableError('database', `the metadata could not be saved`, err);
    }
    await this.deps.cache.put(meta);
    await this.deps.onStored?.(meta).catch((err: unknown) => this.deps.logger.warn({ key, err: describe(err) }, 'post-upload hook failed'));
    return meta;
  }

  /**
   * S3 needs the length before the body; a chunked upload is spooled to a temporary file (never
   * to memory) while it is hashed and bounded, then streamed from there.
   */
  private async uploadUnsized(body: Readable, hasher: HashingStream, store: ObjectStore, key: string, contentType: string): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), 'sav3-upload-'));
    const file = join(dir, 'body');
    try {
      await pipeline(body, hasher, createWriteStream(file));
      await store.put(key, createReadStream(file), hasher.bytes, contentType);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async metadata(rawKey: string): Promise<MediaMetadata> {
    const key = this.validateKey(rawKey);
    const cached = await this.deps.cache.get(key);
    if (cached === 'deleted') throw new NotFoundError(`no media object ${key}`);
    if (cached) return cached;
    let meta: MediaMetadata | undefined;
    try {
      meta = await this.deps.repository.find(key);
    } catch (err) {
      throw new DependencyUnavailableError('database', `the metadata could not be read`, err);
    }
    if (!meta) throw new NotFoundError(`no media object ${key}`);
    await this.deps.cache.fill(meta);
    return meta;
  }

  /**
   * Streams an object from whichever reachable backend holds it: the one it was written to
   * first, then the others.
   */
  async download(rawKey: string): Promise<MediaContent> {
    const meta = await this.metadata(rawKey);
    const order = [meta.backend, this.deps.activeBackend(), ...this.deps.stores.keys()];
    let lastError: unknown;
    for (const backend of new Set(order)) {
      const store = this.deps.stores.get(backend);
      if (!store) continue;
      try {
        return { meta, servedBy: backend, stream: await store.get(meta.key) };
      } catch (err) {
        lastError = err;
        if (!(err instanceof ObjectMissingError)) {
          this.deps.logger.warn({ backend, key: meta.key, err: describe(err) }, 'media backend failed a read; trying the next');
        }
      }
    }
    if (lastError instanceof ObjectMissingError) throw new NotFoundError(`the content of ${meta.key} is on no backend`);
    throw new DependencyUnavailableError('media', `no media backend could serve ${meta.key}`, lastError);
  }

  async remove(rawKey: string): Promise<void> {
    const key = this.validateKey(rawKey);
    try {
      await this.deps.cache.tombstone(key);
    } catch (err) {
      throw new DependencyUnavailableError('redis', `the media cache could not be invalidated`, err);
    }
    let existed: boolean;
    try {
      existed = await this.deps.repository.delete(key);
    } catch (err) {
      if (err instanceof AppError) throw err; // refused by the write barrier: keeps its own answer
      throw new DependencyUnavailableError('database', `the metadata could not be deleted`, err);
    }
    if (!existed) throw new NotFoundError(`no media object ${key}`);
    // Content goes from every backend that is reachable; a copy left on an unreachable one is
    // unreachable through the API (no metadata) and is skipped by sync.
    await Promise.all(
      [...this.deps.stores.values()].map((store) =>
        store.remove(key).catch((err: unknown) => {
          this.deps.logger.warn({ backend: store.backend, key, err: describe(err) }, 'media content not removed from a backend');
        }),
      ),
    );
  }

  async list(prefix: string, limit: number, after?: string): Promise<MediaMetadata[]> {
    try {
      return await this.deps.repository.list(prefix, limit, after);
    } catch (err) {
      throw new DependencyUnavailableError('database', `the media list could not be read`, err);
    }
  }

  private store(backend: MediaBackendName): ObjectStore {
    const store = this.deps.stores.get(backend);
    if (!store) throw new DependencyUnavailableError('media', `media backend ${backend} is not configured`);
    return store;
  }

  private storeError(err: unknown, backend: MediaBackendName): Error {
    if (err instanceof PayloadTooLargeError || err instanceof BadRequestError) return err;
    return new DependencyUnavailableError('media', `the ${backend} media backend did not take the upload`, err);
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
