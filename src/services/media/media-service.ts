import type { MediaBackendName } from '../../domain.ts';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { AppError, BadRequestError, DependencyUnavailableError, NotFoundError, PayloadTooLargeError } from '../../http/app-error.ts';
import { WriteOutcomeUnknownError } from '../write-gate/write-gate.ts';
import type { Logger } from '../../logger.ts';
import { sendExactly } from '../../lib/send-exactly.ts';
import { HashingStream, VerifyingStream } from './hashing-stream.ts';
import { cacheClock, type MediaCache } from './media-cache.ts';
import { contentTypeSchema, mediaKeySchema } from './media-key.ts';
import {
  CommitTooLateError,
  objectName,
  versionObjectName,
  type MediaMetadata,
  type MediaRepository,
  type WriteCommit,
} from './media-repository.ts';
import { ObjectMissingError, type ObjectStore } from '../../adapters/object-store.ts';
import { UploadSpool } from './upload-spool.ts';
import type { VersionContentCache } from './version-content-cache.ts';

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
  /** Its commits update the cache before they return (`updatingCache`), inside the write fence. */
  repository: MediaRepository;
  cache: MediaCache;
  stores: ReadonlyMap<MediaBackendName, ObjectStore>;
  /** The backend new uploads go to; read on every call so a switch applies at once. */
  activeBackend: () => MediaBackendName;
  /** True when the background probes last found this backend down: reads skip it. */
  backendDown?: (backend: MediaBackendName) => boolean;
  /** Backends each committed version is copied to by the continuous backup (outbox rows). */
  copyTargets?: (writtenTo: MediaBackendName) => MediaBackendName[];
  /** Unreferenced content older than this is garbage; a write must commit within half of it. */
  gcGraceMs: number;
  spool: UploadSpool;
  /** Bytes of small versions kept in memory (immutable, so never stale). */
  contentCache?: VersionContentCache;
  maxBytes: number;
  logger: Logger;
  /**
   * Told when content read from `backend` did not match the acknowledged size and sha256 (the
   * response was aborted): count it and stop trusting that copy (`version` undefined for an
   * old-layout object).
   */
  onCorrupt?: (event: { key: string; version: string | undefined; backend: MediaBackendName }) => void;
  /** Called after a write is committed (wakes the continuous backup). */
  onCommitted?: (meta: MediaMetadata) => void;
  now?: () => Date;
}

/** The answer to a commit whose connection died: it may or may not have been applied. */
export class OutcomeUnknownError extends AppError {
  constructor() {
    super(
      503,
      'outcome_unknown',
      'the database connection failed while the write was committed and its outcome could not be confirmed; read the key to see whether it was applied',
    );
    this.headers['Retry-After'] = '5';
  }
}

/**
 * Media uploads and reads. Content is written once under a fresh version name, then one
 * transaction (`commit`) moves the key's pointer to it: a reader sees the old version or the new
 * one, complete, never a mix; a refused write leaves only unreferenced content, which the garbage
 * collector removes after the grace period.
 */
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
    const version = randomUUID();
    const name = versionObjectName(version);
    const hasher = new HashingStream(maxBytes);
    try {
      if (input.declaredLength !== undefined) {
        await Promise.all([
          sendExactly(input.body, hasher, input.declaredLength),
          store.put(name, hasher, input.declaredLength, contentType),
        ]);
      } else {
        await this.deps.spool.spool(input.body, hasher, (file, size) => store.put(name, file, size, contentType));
      }
    } catch (err) {
      input.body.resume();
      throw this.storeError(err, backend);
    }
    const commitBy = new Date(Date.now() + this.deps.gcGraceMs / 2);
    const meta = await this.commit({
      key,
      version,
      size: hasher.bytes,
      sha256: hasher.digest(),
      contentType,
      backend,
      createdAt: this.now(),
      copyTo: this.deps.copyTargets?.(backend) ?? [],
      commitBy,
    });
    this.deps.onCommitted?.(meta);
    return meta;
  }

  /**
   * THE commit point of a media write: until this transaction commits, nothing of the write is
   * visible; after it, the write is acknowledged. Checks that must hold for a write to be
   * accepted (e.g. a write fence) belong here, right before `commitWrite`.
   */
  private async commit(write: WriteCommit): Promise<MediaMetadata> {
    const observedAt = cacheClock();
    try {
      return await this.deps.repository.commitWrite(write);
    } catch (err) {
      // Refused by the write barrier (read-only mode or a switch since the write was admitted), or
      // a commit the barrier gave up on whose outcome it cannot vouch for (it may have been applied).
      if (err instanceof WriteOutcomeUnknownError && !err.settled) await this.deps.cache.invalidate(write.key);
      if (err instanceof AppError) throw err;
      if (err instanceof CommitTooLateError)
        throw new DependencyUnavailableError('database', 'the metadata could not be saved in time', err);
      if (neverConnected(err)) throw new DependencyUnavailableError('database', 'the metadata could not be saved', err);
      // The transaction may have committed with its answer lost: look before refusing.
      for (let attempt = 0; attempt < 3; attempt += 1) {
        await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
        const committed = await this.deps.repository.versionCommitted(write.version).catch(() => undefined);
        if (committed === false) throw new DependencyUnavailableError('database', 'the metadata could not be saved', err);
        if (committed === true) {
          const meta = await this.deps.repository.find(write.key).catch(() => undefined);
          this.deps.logger.warn(
            { key: write.key, version: write.version },
            'a media commit whose answer was lost turned out to be applied',
          );
          // Superseded since: seq 0 says so, and the cache waits out older entries instead of recording it.
          const applied = meta?.version === write.version ? meta : { ...write, backends: [write.backend], seq: 0 };
          await this.deps.cache.recordWrite(applied, observedAt);
          return applied;
        }
      }
      this.deps.logger.error({ key: write.key, version: write.version, err: errorMessage(err) }, 'media commit outcome unknown');
      await this.deps.cache.invalidate(write.key); // it may have committed
      throw new OutcomeUnknownError();
    }
  }

  async metadata(rawKey: string): Promise<MediaMetadata> {
    const key = this.validateKey(rawKey);
    const cached = await this.deps.cache.get(key);
    if (cached === 'deleted') throw new NotFoundError(`no media object ${key}`);
    if (cached) return cached;
    return this.fromDatabase(key);
  }

  private async fromDatabase(key: string): Promise<MediaMetadata> {
    let meta: MediaMetadata | undefined;
    const observedAt = cacheClock();
    try {
      meta = await this.deps.repository.find(key);
    } catch (err) {
      throw new DependencyUnavailableError('database', `the metadata could not be read`, err);
    }
    if (!meta) throw new NotFoundError(`no media object ${key}`);
    await this.deps.cache.put(meta, observedAt);
    return meta;
  }

  /**
   * Streams the key's version from a backend that holds it: those known to hold it first (the
   * active one before the other), backends the probes report down skipped. 503 when a backend
   * that may hold it cannot be reached; never 404 while the metadata says the key exists.
   */
  async download(rawKey: string): Promise<MediaContent> {
    const meta = await this.metadata(rawKey);
    try {
      return await this.open(meta);
    } catch (err) {
      if (!(err instanceof ObjectMissingError)) throw err;
      // A cached entry may name a version replaced and collected since: ask the database.
      const fresh = await this.fromDatabase(meta.key);
      try {
        return await this.open(fresh);
      } catch (again) {
        if (!(again instanceof ObjectMissingError)) throw again;
        this.deps.logger.error(
          { key: fresh.key, version: fresh.version, backends: fresh.backends },
          'media content missing on every reachable backend',
        );
        throw new DependencyUnavailableError('media', `the content of ${fresh.key} is on no reachable backend`, again);
      }
    }
  }

  private async open(meta: MediaMetadata): Promise<MediaContent> {
    const active = this.deps.activeBackend();
    const known = [...meta.backends].sort((a, b) => Number(b === active) - Number(a === active));
    const order = [...new Set([...known, ...this.deps.stores.keys()])];
    // Backends the probes report down go last: a read never waits on a dead store while another
    // holds the version, and still reaches one whose probe has not yet seen it come back.
    const down = order.filter((b) => this.deps.backendDown?.(b));
    const name = objectName(meta);
    const cache = meta.version ? this.deps.contentCache : undefined;
    const cached = cache?.get(meta.version!);
    if (cached) return { meta, servedBy: meta.backends.includes(active) ? active : meta.backends[0]!, stream: cached };
    let unavailable: unknown;
    let missing: ObjectMissingError | undefined;
    for (const backend of [...order.filter((b) => !down.includes(b)), ...down]) {
      const store = this.deps.stores.get(backend);
      if (!store) continue;
      try {
        const stream = await store.get(name);
        const body = cache ? cache.tee(meta.version!, meta.size, meta.sha256, stream) : stream;
        return { meta, servedBy: backend, stream: this.verified(meta, backend, body) };
      } catch (err) {
        if (err instanceof ObjectMissingError) {
          missing = err;
          continue;
        }
        unavailable = err;
        this.deps.logger.warn({ backend, key: meta.key, err: errorMessage(err) }, 'media backend failed a read; trying the next');
      }
    }
    if (unavailable !== undefined || !missing) {
      if (unavailable instanceof AppError) throw unavailable;
      throw new DependencyUnavailableError('media', `no reachable media backend could serve ${meta.key}`, unavailable);
    }
    throw missing;
  }

  /**
   * Every byte served from a backend is hashed on its way out; a body that does not match the
   * acknowledged sha256 and length fails at its end (before its last chunk is released), so the
   * route aborts the response instead of completing it under the acknowledged ETag.
   */
  private verified(meta: MediaMetadata, backend: MediaBackendName, source: Readable): Readable {
    const verifier = new VerifyingStream({ size: meta.size, sha256: meta.sha256 }, (err) => {
      this.deps.logger.error(
        { key: meta.key, version: meta.version, backend, expectedSha256: meta.sha256, bytes: err.bytes, sha256: err.sha256 },
        'media content failed its integrity check; the response was aborted',
      );
      this.deps.onCorrupt?.({ key: meta.key, version: meta.version ?? undefined, backend });
    });
    source.once('error', (err) => verifier.destroy(err));
    verifier.once('close', () => {
      if (!source.readableEnded) source.destroy();
    });
    return source.pipe(verifier);
  }

  async remove(rawKey: string): Promise<void> {
    const key = this.validateKey(rawKey);
    let seq: number | undefined;
    try {
      seq = await this.deps.repository.commitDelete(key);
    } catch (err) {
      if (err instanceof WriteOutcomeUnknownError && !err.settled) await this.deps.cache.invalidate(key); // it may have committed
      if (err instanceof AppError) throw err; // refused by the write barrier: keeps its own answer
      if (neverConnected(err)) throw new DependencyUnavailableError('database', `the metadata could not be deleted`, err);
      // The delete may have committed with its answer lost: say so rather than claim a refusal.
      this.deps.logger.error({ key, err: errorMessage(err) }, 'media delete outcome unknown');
      await this.deps.cache.invalidate(key); // it may have committed
      throw new OutcomeUnknownError();
    }
    if (seq === undefined) throw new NotFoundError(`no media object ${key}`);
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
    if (err instanceof AppError) return err;
    return new DependencyUnavailableError('media', `the ${backend} media backend did not take the upload`, err);
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A connection that was never made cannot have committed anything. */
function neverConnected(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth += 1) {
    const text = `${(e as { code?: unknown }).code ?? ''} ${(e as { kind?: unknown }).kind ?? ''} ${e instanceof Error ? e.message : ''}`;
    // The last: a pool closed by a database switch before the statement was sent.
    if (/ECONNREFUSED|DatabaseNotReachable|P1001|connect ECONN|Cannot use a pool after calling end/.test(text)) return true;
  }
  const meta = JSON.stringify((err as { meta?: unknown }).meta ?? {});
  return /ECONNREFUSED|DatabaseNotReachable/.test(meta);
}
