import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';

/**
 * Small versions' bytes in process memory, least recently used out first. Safe without any
 * invalidation because a version is immutable: the metadata decides which version a key serves
 * (and whether it exists), this only saves the trip to S3 for its bytes, and is asked only for
 * the version that metadata names (from PostgreSQL, or a Redis entry that cannot outlive an
 * acknowledged replacement: see RedisMediaCache). An entry is kept only when the whole body
 * arrived and hashed to the version's sha256.
 */
export class VersionContentCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly limits: { maxBytes: number; maxItemBytes: number }) {}

  get(version: string): Readable | undefined {
    const body = this.entries.get(version);
    if (!body) return undefined;
    this.entries.delete(version);
    this.entries.set(version, body);
    return Readable.from([body]);
  }

  /** Passes `source` through, keeping a copy if it is small enough and arrives whole and correct. */
  tee(version: string, size: number, sha256: string, source: Readable): Readable {
    if (size > this.limits.maxItemBytes || this.limits.maxBytes === 0) return source;
    const chunks: Buffer[] = [];
    const out = new PassThrough();
    source.on('data', (c: Buffer) => chunks.push(c));
    source.once('end', () => {
      const body = Buffer.concat(chunks);
      if (body.length === size && createHash('sha256').update(body).digest('hex') === sha256) this.add(version, body);
    });
    source.once('error', (err) => out.destroy(err));
    out.once('close', () => {
      if (!source.readableEnded) source.destroy();
    });
    source.pipe(out);
    return out;
  }

  private add(version: string, body: Buffer): void {
    if (this.entries.has(version)) return;
    this.entries.set(version, body);
    this.bytes += body.length;
    for (const [oldest, b] of this.entries) {
      if (this.bytes <= this.limits.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= b.length;
    }
  }
}
