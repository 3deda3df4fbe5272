import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ContentIntegrityError, VerifyingStream } from '../../src/services/media/hashing-stream.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Runs `chunks` through a VerifyingStream expecting `expected`; what came out, and how it ended. */
async function run(chunks: Buffer[], expected: Buffer) {
  const out: Buffer[] = [];
  const mismatches: ContentIntegrityError[] = [];
  const verifier = new VerifyingStream({ size: expected.length, sha256: sha(expected) }, (e) => mismatches.push(e));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(chunk);
      done();
    },
  });
  const error = await pipeline(Readable.from(chunks), verifier, sink).then(
    () => undefined,
    (err: unknown) => err,
  );
  return { out: Buffer.concat(out), error, mismatches };
}

describe('VerifyingStream: a body that does not hash to its sha256 never comes out whole', () => {
  const body = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz'.repeat(100));
  const parts = [body.subarray(0, 1000), body.subarray(1000, 2000), body.subarray(2000)];

  it('passes a correct body through unchanged', async () => {
    const r = await run(parts, body);
    expect(r.error).toBeUndefined();
    expect(r.out.equals(body)).toBe(true);
    expect(r.mismatches).toEqual([]);
  });

  it('same-size corruption: fails at the end, the last chunk withheld, told once', async () => {
    const bad = Buffer.from(body);
    bad[2500] = bad[2500]! ^ 1;
    const r = await run([bad.subarray(0, 1000), bad.subarray(1000, 2000), bad.subarray(2000)], body);
    expect(r.error).toBeInstanceOf(ContentIntegrityError);
    expect(r.out.length).toBe(2000);
    expect(r.mismatches).toHaveLength(1);
  });

  it('a single-chunk corrupt body yields nothing at all', async () => {
    const bad = Buffer.from(body);
    bad[0] = bad[0]! ^ 1;
    const r = await run([bad], body);
    expect(r.error).toBeInstanceOf(ContentIntegrityError);
    expect(r.out.length).toBe(0);
  });

  it('a short body and a long body fail (the long one as soon as it passes the size)', async () => {
    const short = await run([body.subarray(0, 1000), body.subarray(1000, 3000)], body);
    expect(short.error).toBeInstanceOf(ContentIntegrityError);
    expect(short.out.length).toBe(1000);
    const long = await run([...parts, Buffer.from('x')], body);
    expect(long.error).toBeInstanceOf(ContentIntegrityError);
    expect(long.out.length).toBeLessThan(body.length);
  });
});
