import type { MediaBackendName } from '../domain.ts';
import type { Readable } from 'node:stream';
import { AppError } from '../http/app-error.ts';

export interface StoredObjectInfo {
  key: string;
  size: number;
  etag: string;
  contentType?: string;
  lastModified?: Date;
}

/** The narrow seam between media logic and an S3 server; tests hand services an in-memory one. */
export interface ObjectStore {
  readonly backend: MediaBackendName;
  readonly bucket: string;
  /** Resolves when the bucket exists and answers; bounded by the timeout, aborted by the signal. */
  checkBucket(timeoutMs: number, signal?: AbortSignal): Promise<void>;
  /** Streams exactly `size` bytes from body into the object; published only when complete. */
  put(key: string, body: Readable, size: number, contentType: string): Promise<void>;
  /** Throws ObjectMissingError when the object is absent, StoreSaturatedError when no socket is free. */
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<StoredObjectInfo | undefined>;
  remove(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<StoredObjectInfo>;
  /** Pools (upload, download) that are at their bound right now. */
  saturated(): string[];
  close(): void;
}

export class ObjectMissingError extends Error {
  readonly code = 'NoSuchKey';
  constructor(backend: string, key: string) {
    super(`object ${key} is not on the ${backend} backend`);
  }
}

/** Every socket of a bounded S3 pool is busy: the request is refused at once rather than queued. */
export class StoreSaturatedError extends AppError {
  constructor(backend: string, pool: string) {
    super(503, 'media_saturated', `the ${backend} media backend's ${pool} pool is saturated; retry shortly`, { backend, pool });
    this.headers['Retry-After'] = '1';
  }
}

/** Counts in-flight requests of one pool; `tryAcquire` refuses beyond the bound. */
export class PoolLimiter {
  private inFlight = 0;
  constructor(
    readonly name: string,
    readonly max: number,
  ) {}

  tryAcquire(): (() => void) | undefined {
    if (this.inFlight >= this.max) return undefined;
    this.inFlight += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight -= 1;
    };
  }

  get busy(): number {
    return this.inFlight;
  }

  get full(): boolean {
    return this.inFlight >= this.max;
  }
}
