import type { Readable, Writable } from 'node:stream';

/** A body that is not the length it was declared to be. */
export class BodyLengthError extends Error {
  constructor(
    readonly declared: number,
    readonly seen: number,
  ) {
    super(`the body ${seen > declared ? 'exceeds' : 'ended short of'} its declared ${declared} bytes (${seen} seen)`);
  }
}

/**
 * Destroys a stream; a server's incoming request is detached from its socket first, as pipeline's
 * destroyer does: destroying it would destroy the socket, and the client would get a reset instead
 * of the answer saying why (503 when S3 failed mid-body).
 */
function destroyKeepingSocket(stream: Readable, err: Error): void {
  const request = stream as Readable & { socket?: unknown; httpVersion?: unknown; req?: unknown };
  if (typeof request.httpVersion === 'string' && request.req === undefined && request.socket) request.socket = null;
  stream.destroy(err);
}

/**
 * Streams `source`, a body of exactly `size` bytes, into `target`, as `pipeline(source, target)`
 * does: with back-pressure, and on an error of either stream, or one closing early, both are
 * destroyed with the error and the promise rejects; it resolves once `target` has finished. Unlike
 * `pipeline`, the chunk that completes the body goes with `target.end()`, so an HTTP request's
 * headers, a one-chunk body and its end leave in one socket write instead of two; and it has none
 * of pipeline's per-call machinery (end-of-stream watchers, an AbortController and an AbortError
 * made at every finish), which was a measurable part of the CPU of a small upload. A body longer
 * or shorter than `size` fails with BodyLengthError. Its error listeners stay on both streams
 * (later errors of a destroyed stream are ignored, never unhandled).
 */
export function sendExactly(source: Readable, target: Writable, size: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let sent = 0;
    let settled = false;
    // Attached below in this order ('data' last: it starts the flow), detached together when settled.
    let listeners: [Readable | Writable, string, (arg: never) => void][] = [];
    const detach = () => {
      for (const [stream, event, fn] of listeners) stream.off(event, fn as () => void);
    };
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      detach();
      destroyKeepingSocket(source, err);
      target.destroy(err);
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      sent += chunk.length;
      if (sent > size) fail(new BodyLengthError(size, sent));
      else if (sent === size) target.end(chunk);
      else if (!target.write(chunk)) source.pause();
    };
    const onDrain = () => source.resume();
    const onEnd = () => {
      if (sent < size) fail(new BodyLengthError(size, sent));
      else if (!target.writableEnded) target.end(); // an empty body
    };
    const onFinish = () => {
      if (settled) return;
      settled = true;
      detach();
      resolve();
    };
    const onError = (err: Error) => fail(err);
    const prematureClose = () => Object.assign(new Error('premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    const onSourceClose = () => {
      if (!source.readableEnded) fail(prematureClose());
    };
    const onTargetClose = () => {
      if (!target.writableFinished) fail(prematureClose());
    };
    source.on('error', onError);
    target.on('error', onError);
    listeners = [
      [source, 'end', onEnd],
      [source, 'close', onSourceClose],
      [target, 'drain', onDrain],
      [target, 'finish', onFinish],
      [target, 'close', onTargetClose],
      [source, 'data', onData],
    ];
    for (const [stream, event, fn] of listeners) stream.on(event, fn as () => void);
    // A 'data' listener does not start a stream that was paused explicitly before (pipe() resumes
    // it): without this, such a body was never read and the transfer hung until a socket timeout.
    if (source.isPaused()) source.resume();
    // A stream destroyed before this was called emits nothing more.
    if (source.destroyed && !source.readableEnded) fail(source.errored ?? prematureClose());
    else if (target.destroyed) fail(target.errored ?? prematureClose());
  });
}
