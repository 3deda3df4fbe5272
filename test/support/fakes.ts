import { Readable } from 'node:stream';
import type { MediaBackendName } from '../../src/config/config.ts';
import type { CachedMeta, MediaCache } from '../../src/media/media-cache.ts';
import type { MediaMetadata, MediaRepository, WriteCommit } from '../../src/media/media-repository.ts';
import type { MediaVersionRepository, OutboxTask, StoredVersion } from '../../src/media/media-version-repository.ts';
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

  saturated(): string[] {
    return [];
  }

  close(): void {}
}

/** The pointer table in memory, with the same commit semantics: one version per key, a seq per commit. */
export class MemoryMediaRepository implements MediaRepository {
  readonly rows = new Map<string, MediaMetadata>();
  readonly versions = new Map<string, { key: string; replaced: boolean }>();
  failWith?: Error;
  /** When set, the commit is applied but its answer is lost (a connection cut after COMMIT). */
  loseAnswer = false;
  private seq = 0;

  async find(key: string) {
    if (this.failWith) throw this.failWith;
    return this.rows.get(key);
  }
  async commitWrite(w: WriteCommit) {
    if (this.failWith) throw this.failWith;
    const old = this.rows.get(w.key);
    if (old?.version) this.versions.get(old.version)!.replaced = true;
    this.versions.set(w.version, { key: w.key, replaced: false });
    const meta: MediaMetadata = { key: w.key, size: w.size, sha256: w.sha256, contentType: w.contentType, backend: w.backend, createdAt: w.createdAt, version: w.version, backends: [w.backend], seq: ++this.seq };
    this.rows.set(w.key, meta);
    if (this.loseAnswer) throw new Error('Connection terminated unexpectedly');
    return meta;
  }
  async commitDelete(key: string) {
    if (this.failWith) throw this.failWith;
    const old = this.rows.get(key);
    if (!old) return undefined;
    if (old.version) this.versions.get(old.version)!.replaced = true;
    this.rows.delete(key);
    return ++this.seq;
  }
  async versionCommitted(version: string) {
    if (this.failWith) throw this.failWith;
    return this.versions.has(version);
  }
  async list(prefix: string, limit: number, after?: string) {
    if (this.failWith) throw this.failWith;
    return [...this.rows.values()]
      .filter((m) => m.key.startsWith(prefix) && (after === undefined || m.key > after))
      .sort((a, b) => (a.key < b.key ? -1 : 1))
      .slice(0, limit);
  }
}

export class MemoryMediaCache implements MediaCache {
  readonly entries = new Map<string, { seq: number; value: MediaMetadata | 'deleted' }>();
  down = false;

  async get(key: string): Promise<CachedMeta> {
    return this.down ? undefined : this.entries.get(key)?.value;
  }
  private set(key: string, seq: number, value: MediaMetadata | 'deleted') {
    if (this.down) return;
    const cur = this.entries.get(key);
    if (!cur || cur.seq < seq) this.entries.set(key, { seq, value });
  }
  async put(meta: MediaMetadata) {
    this.set(meta.key, meta.seq, meta);
  }
  async markDeleted(key: string, seq: number) {
    this.set(key, seq, 'deleted');
  }
  async clear() {
    const n = this.entries.size;
    this.entries.clear();
    return n;
  }
}

/** Versions and the outbox in memory, for the replicator, sync and garbage collector. */
export class MemoryVersionRepository implements MediaVersionRepository {
  readonly versions = new Map<string, StoredVersion>();
  /** key -> current version id */
  readonly pointers = new Map<string, string>();
  readonly outbox = new Map<string, { version: string; target: MediaBackendName; attempts: number; leaseUntil: number; createdAt: number }>();
  failWith?: Error;
  private nextTask = 0;

  /** Records a committed version (as commitWrite does), with an outbox row per copy target. */
  commit(key: string, version: StoredVersion, copyTo: MediaBackendName[] = []): void {
    const old = this.pointers.get(key);
    if (old) this.versions.get(old)!.replaced = true;
    this.versions.set(version.id, version);
    this.pointers.set(key, version.id);
    for (const target of copyTo) this.outbox.set(String(++this.nextTask), { version: version.id, target, attempts: 0, leaseUntil: 0, createdAt: Date.now() });
  }
  private check() {
    if (this.failWith) throw this.failWith;
  }
  async claimOutbox(limit: number, leaseMs: number): Promise<OutboxTask[]> {
    this.check();
    const now = Date.now();
    const due = [...this.outbox].filter(([, t]) => t.leaseUntil <= now).slice(0, limit);
    return due.flatMap(([id, t]) => {
      const v = this.versions.get(t.version);
      if (!v) return [];
      t.leaseUntil = now + leaseMs;
      t.attempts += 1;
      return [{ ...v, backends: [...v.backends], taskId: id, target: t.target, attempts: t.attempts }];
    });
  }
  async completeCopy(version: string, target: MediaBackendName) {
    this.check();
    const v = this.versions.get(version);
    if (v && !v.backends.includes(target)) v.backends.push(target);
    for (const [id, t] of this.outbox) if (t.version === version && t.target === target) this.outbox.delete(id);
    return v !== undefined;
  }
  async retryOutbox(taskId: string, _error: string, delayMs: number) {
    this.check();
    const t = this.outbox.get(taskId);
    if (t) t.leaseUntil = Date.now() + delayMs;
  }
  async dropOutbox(taskId: string) {
    this.outbox.delete(taskId);
  }
  async outboxStats() {
    this.check();
    const oldest = Math.min(...[...this.outbox.values()].map((t) => t.createdAt));
    return { backlog: this.outbox.size, oldestAgeSeconds: this.outbox.size ? (Date.now() - oldest) / 1000 : 0 };
  }
  private currentSorted(afterKey: string) {
    return [...this.pointers].filter(([k]) => k > afterKey).sort(([a], [b]) => (a < b ? -1 : 1)).map(([, id]) => this.versions.get(id)!);
  }
  async currentMissingOn(target: MediaBackendName, afterKey: string, limit: number) {
    this.check();
    return this.currentSorted(afterKey).filter((v) => !v.backends.includes(target)).slice(0, limit);
  }
  async current(afterKey: string, limit: number) {
    this.check();
    return this.currentSorted(afterKey).slice(0, limit);
  }
  async countLegacy() {
    return 0;
  }
  async collect() {
    return [];
  }
  async purgeTombstones() {
    return 0;
  }
  async existing(ids: string[]) {
    return new Set(ids.filter((id) => this.versions.has(id)));
  }
  /** No old-layout objects in memory (the collector of them is tested against PostgreSQL). */
  async legacyGarbage() {
    return [];
  }
  async dropLegacyGarbage() {}
}
