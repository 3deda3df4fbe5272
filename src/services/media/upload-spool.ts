import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError } from '../../http/app-error.ts';

export class SpoolFullError extends AppError {
  constructor(reason: string) {
    super(
      503,
      'media_saturated',
      `uploads without Content-Length are spooled to disk, and ${reason}; retry shortly or send Content-Length`,
    );
    this.headers['Retry-After'] = '2';
  }
}

/**
 * S3 needs a body's length before the body: an upload without Content-Length is spooled to a
 * temporary file first. Spools are bounded in number and in total bytes, counted as they arrive,
 * so stalled chunked uploads cannot fill the disk.
 */
export class UploadSpool {
  private active = 0;
  private bytes = 0;

  constructor(private readonly limits: { maxConcurrent: number; maxBytes: number }) {}

  get usage() {
    return { active: this.active, bytes: this.bytes, ...this.limits };
  }

  get full(): boolean {
    return this.active >= this.limits.maxConcurrent || this.bytes >= this.limits.maxBytes;
  }

  /** Spools `body` (through `through`, e.g. a hasher), then hands a stream of it to `use`. */
  async spool<T>(body: Readable, through: Transform, use: (file: Readable, size: number) => Promise<T>): Promise<T> {
    if (this.active >= this.limits.maxConcurrent) throw new SpoolFullError(`${this.limits.maxConcurrent} are in progress`);
    this.active += 1;
    let counted = 0;
    const dir = await mkdtemp(join(tmpdir(), 'sav3-upload-'));
    const file = join(dir, 'body');
    try {
      const meter = new Transform({
        transform: (chunk: Buffer, _enc, cb) => {
          counted += chunk.length;
          this.bytes += chunk.length;
          if (this.bytes > this.limits.maxBytes) cb(new SpoolFullError(`the spool holds its limit of ${this.limits.maxBytes} bytes`));
          else cb(null, chunk);
        },
      });
      await pipeline(body, through, meter, createWriteStream(file));
      return await use(createReadStream(file), counted);
    } finally {
      this.active -= 1;
      this.bytes -= counted;
      await rm(dir, { recursive: true, force: true });
    }
  }
}
