import { PassThrough, Readable, Writable } from 'node:stream';
import { BodyLengthError, sendExactly } from '../../src/lib/send-exactly.ts';

/** A sink that records the chunks written and the one handed to `end()`, if any. */
function sink(options: { failAt?: number; highWaterMark?: number } = {}) {
  const writes: number[] = [];
  let endedWith: number | undefined;
  let received = 0;
  const stream = new Writable({
    highWaterMark: options.highWaterMark ?? 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      received += chunk.length;
      writes.push(chunk.length);
      if (options.failAt !== undefined && received >= options.failAt) cb(new Error('sink failed'));
      else setImmediate(cb);
    },
  });
  const end = stream.end.bind(stream);
  stream.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (Buffer.isBuffer(chunk)) endedWith = chunk.length;
    return (end as (...a: unknown[]) => Writable)(chunk, ...rest);
  }) as typeof stream.end;
  return { stream, writes, received: () => received, endedWith: () => endedWith };
}

describe('sendExactly', () => {
  it('hands the chunk that completes the body to end(): a one-chunk body is one write with the end', async () => {
    const out = sink();
    await sendExactly(Readable.from([Buffer.alloc(100, 1)]), out.stream, 100);
    expect(out.writes).toEqual([100]);
    expect(out.endedWith()).toBe(100);
    expect(out.stream.writableFinished).toBe(true);
  });

  it('streams a body of many chunks with back-pressure, all bytes in order', async () => {
    const out = sink({ highWaterMark: 8 });
    const chunks = Array.from({ length: 50 }, (_, i) => Buffer.alloc(10, i));
    await sendExactly(Readable.from(chunks), out.stream, 500);
    expect(out.received()).toBe(500);
    expect(out.endedWith()).toBe(10);
  });

  it('reads a source that was paused explicitly before the call (as pipe() does), never waits on it forever', async () => {
    const source = new PassThrough();
    source.pause();
    source.end(Buffer.alloc(5000, 3));
    const out = sink();
    await sendExactly(source, out.stream, 5000);
    expect(out.received()).toBe(5000);
  });

  it('ends an empty body', async () => {
    const out = sink();
    await sendExactly(Readable.from([]), out.stream, 0);
    expect(out.stream.writableFinished).toBe(true);
  });

  it('fails a body shorter or longer than declared, destroying both streams', async () => {
    const short = sink();
    const src1 = Readable.from([Buffer.alloc(10)]);
    await expect(sendExactly(src1, short.stream, 11)).rejects.toBeInstanceOf(BodyLengthError);
    expect(short.stream.destroyed).toBe(true);

    const long = sink();
    const src2 = Readable.from([Buffer.alloc(10), Buffer.alloc(10)]);
    await expect(sendExactly(src2, long.stream, 15)).rejects.toBeInstanceOf(BodyLengthError);
    expect(src2.destroyed).toBe(true);
    expect(long.stream.destroyed).toBe(true);
  });

  it('rejects with the source’s error and destroys the target, and the other way round', async () => {
    const source = new PassThrough();
    const out = sink();
    const sent = sendExactly(source, out.stream, 100);
    source.write(Buffer.alloc(10));
    source.destroy(new Error('client went away'));
    await expect(sent).rejects.toThrow('client went away');
    expect(out.stream.destroyed).toBe(true);

    const source2 = new PassThrough();
    const failing = sink({ failAt: 5 });
    const sent2 = sendExactly(source2, failing.stream, 100);
    source2.write(Buffer.alloc(10));
    await expect(sent2).rejects.toThrow('sink failed');
    expect(source2.destroyed).toBe(true);
  });

  it('rejects when the source closes without ending, or was destroyed before the call', async () => {
    const source = new PassThrough();
    const sent = sendExactly(source, sink().stream, 100);
    source.destroy();
    await expect(sent).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });

    const gone = new PassThrough();
    gone.destroy();
    await new Promise((r) => setImmediate(r));
    await expect(sendExactly(gone, sink().stream, 1)).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });
});
