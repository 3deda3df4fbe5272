import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PayloadTooLargeError } from '../../http/app-error.ts';

/** Passes bytes through while counting and hashing them; fails once more than `limit` pass. */
export class HashingStream extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  constructor(private readonly limit: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      callback(new PayloadTooLargeError(this.limit));
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/** Content read from a backend is not what was acknowledged (size or sha256 differ). */
export class ContentIntegrityError extends Error {
  constructor(
    readonly bytes: number,
    readonly sha256: string | undefined,
  ) {
    super(`content read does not match its metadata (${bytes} bytes${sha256 ? `, sha256 ${sha256}` : ', too long'})`);
  }
}

/**
 * Passes a stored body through while hashing it, holding back its last chunk until the whole body
 * has hashed to the expected sha256 at the expected length: a reader of corrupt content gets a
 * short body and an error, never a complete-looking wrong one. `onMismatch` is told once.
 */
export class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private held: Buffer | undefined;
  private bytes = 0;

  constructor(
    private readonly expected: { size: number; sha256: string },
    private readonly onMismatch: (err: ContentIntegrityError) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expected.size) {
      callback(this.fail(undefined));
      return;
    }
    this.hash.update(chunk);
    const previous = this.held;
    this.held = chunk;
    callback(null, previous);
  }

  override _flush(callback: TransformCallback): void {
    const digest = this.hash.digest('hex');
    if (this.bytes !== this.expected.size || digest !== this.expected.sha256) {
      callback(this.fail(digest));
      return;
    }
    callback(null, this.held);
  }

  private fail(digest: string | undefined): ContentIntegrityError {
    const err = new ContentIntegrityError(this.bytes, digest);
    this.held = undefined;
    this.onMismatch(err);
    return err;
  }
}
