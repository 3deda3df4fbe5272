import http from 'node:http';
import https from 'node:https';
import { errorMessage } from '../lib/error-message.ts';

export interface HttpAnswer {
  status: number;
  text: string;
}

/** Bytes of an answer kept; the DR API's answers to the command-line tools are small JSON. */
const MAX_ANSWER_BYTES = 1024 * 1024;

/**
 * One HTTP request with a string body, bounded by `timeoutMs` from start to the end of the answer,
 * for command-line tools. node:http rather than fetch: Node 20's fetch can leave a request whose
 * connection the peer reset right after accepting it unsettled, with nothing keeping the process
 * alive, so a tool waiting on it exits 0 in the middle of its work. Here every outcome settles:
 * an answer, `connection failed: … (ECONNRESET)`, or `no answer within N ms`, and the pending
 * timer keeps the process alive until then.
 */
export function httpCall(
  url: string,
  init: { method: string; headers?: Record<string, string>; body?: string; timeoutMs: number },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outcome();
    };
    const fail = (err: Error & { code?: string }) =>
      settle(() => reject(new Error(err.code ? `connection failed: ${err.message} (${err.code})` : err.message)));
    const target = new URL(url);
    const headers: Record<string, string | number> = { ...init.headers };
    if (init.body !== undefined) headers['Content-Length'] = Buffer.byteLength(init.body);
    const req = (target.protocol === 'https:' ? https : http).request(target, { method: init.method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > MAX_ANSWER_BYTES) req.destroy(new Error(`the answer is larger than ${MAX_ANSWER_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on('error', fail);
      res.on('close', () => {
        if (!res.complete) fail(Object.assign(new Error('the answer was cut off'), { code: 'ECONNRESET' }));
        else settle(() => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      });
    });
    const timer = setTimeout(() => {
      fail(new Error(`no answer within ${init.timeoutMs} ms`));
      req.destroy();
    }, init.timeoutMs);
    req.on('error', fail);
    req.end(init.body);
  });
}

/**
 * Runs a command-line tool's main and exits with its code. Should the event loop empty while main
 * has not settled (a wait nothing can end), the tool fails with `code` instead of exiting 0 as if
 * it had finished.
 */
export function runMain(main: () => Promise<number>, what: string, code = 1): void {
  let settled = false;
  process.on('beforeExit', () => {
    if (settled) return;
    process.stderr.write(`${what}: stopped while waiting on something that can no longer answer; check the state before anything else\n`);
    process.exit(code);
  });
  main().then(
    (exitCode) => {
      settled = true;
      process.exit(exitCode);
    },
    (err: unknown) => {
      settled = true;
      process.stderr.write(`${what}: ${errorMessage(err)}\n`);
      process.exit(1);
    },
  );
}
