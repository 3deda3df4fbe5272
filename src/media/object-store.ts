import type { Readable } from 'node:stream';
import type { MediaBackendName } from '../config/config.ts';

export interface StoredObjectInfo {
  key: string;
  size: number;
  etag: string;
  contentType?: string;
}

/** The narrow seam between media logic and an S3 server; tests hand services an in-memory one. */
export interface ObjectStore {
  readonly backend: MediaBackendName;
  readonly bucket: string;
  /** Resolves when the bucket exists and answers; bounded by the timeout, aborted by the signal. */
  checkBucket(timeoutMs: number, signal?: AbortSignal): Promise<void>;
  /** Streams exactly `size` bytes from body into the object. */
  put(key: string, body: Readable, size: number, contentType: string): Promise<void>;
  /** Throws ObjectMissingError when the object is absent. */
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<StoredObjectInfo | undefined>;
  remove(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<StoredObjectInfo>;
  close(): void;
}

export class ObjectMissingError extends Error {
  readonly code = 'NoSuchKey';
  constructor(backend: string, key: string) {
    super(`object ${key} is not on the ${backend} backend`);
  }
}
