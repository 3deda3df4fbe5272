import { Readable } from 'node:stream';
import type { MediaBackendName } from '../../src/config/config.ts';
import type { CachedMeta, MediaCache } from '../../src/media/media-cache.ts';
import type { MediaMetadata, MediaRepository } from '../../src/media/media-repository.ts';
import { ObjectMissingError, type ObjectStore, type StoredObjectInfo } from '../../src/media/object-store.ts';

export class MemoryObjectStore implements ObjectStore {
  readonly objects = new Map<string, { body: Buffer; contentType: string }>();
  /** When set, every call fails with this error (a dead backend). */
  failWith?: Error;
  /** Chunks seen by put() before the request body ended, to prove streaming. */
  chunksBeforeEnd: number[] = [];

  constructor(
    readonly backend: MediaBackendName,
    readonly bucket = `bucket-${backend}`,
  ) {}

  private check(): void {
    if (this.failWith) throw this.failWith;
  }

  async checkBucket(): Promise<void> {
    this.check();
  }

  async put(key: string, body: Readable, size: number, contentType: string): Promise<void> {
    this.check();
    const chunks: Buffer[] = [];
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      this.chunksBeforeEnd.push((chunk as Buffer).length);
    }
    const data = Buffer.concat(chunks);
    if (data.length !== size) throw new Error(`size mismatch: ${data.length} != ${size}`);
    this.objects.set(key, { body: data, contentType });
  }

  async get(key: string): Promise<Readable> {
    this.check();
    const object = this.objects.get(key);
    if (!object) throw new ObjectMissingError(this.backend, key);
    return Readable.from([object.body]);
  }

  async stat(key: string): Promise<StoredObjectInfo | undefined> {
    this.check();
    const object = this.objects.get(key);
    return object ? { key, size: object.body.length, etag: 'etag', contentType: object.contentType } : undefined;
  }

  async remove(key: string): Promise<void> {
    this.check();
    this.objects.delete(key);
  }

  async *list(prefix: string): AsyncIterable<StoredObjectInfo> {
    this.check();
    for (const [key, object] of this.objects) {
      if (key.startsWith(prefix)) yield { key, size: object.body.length, etag: 'etag', contentType: object.contentType };
    }
  }

  close(): void {}
}

export class MemoryMediaRepository implements MediaRepository {
  readonly rows = new Map<string, MediaMetadata>();
  failWith?: Error;

  async find(key: string) {
    if (this.failWith) throw this.failWith;
    return this.rows.get(key);
  }
  async upsert(meta: MediaMetadata) {
    if (this.failWith) throw this.failWith;
    this.rows.set(meta.key, meta);
    return meta;
  }
  async delete(key: string) {
    if (this.failWith) throw this.failWith;
    return this.rows.delete(key);
  }
  async list(prefix: string, limit: number, after?: string) {
    if (this.failWith) throw this.failWith;
    return [...this.rows.values()]
      .filter((m) => m.key.startsWith(prefix) && (after === undefined || m.key > after))
      .sort((a, b) => a.key.localeCompare(b.key))
      .slice(0, limit);
  }
}

export class MemoryMediaCache implements MediaCache {
  readonly entries = new Map<string, MediaMetadata | 'deleted'>();
  down = false;

  async get(key: string): Promise<CachedMeta> {
    return this.down ? undefined : this.entries.get(key);
  }
  async fill(meta: MediaMetadata) {
    if (!this.down && !this.entries.has(meta.key)) this.entries.set(meta.key, meta);
  }
  async put(meta: MediaMetadata) {
    if (!this.down) this.entries.set(meta.key, meta);
  }
  async tombstone(key: string) {
    if (this.down) throw new Error('Stream isn\'t writeable');
    this.entries.set(key, 'deleted');
  }
  async clear() {
    const n = this.entries.size;
    this.entries.clear();
    return n;
  }
}
