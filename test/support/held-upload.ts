import http from 'node:http';
import { randomBytes } from 'node:crypto';

/** An upload whose body is sent in two halves: it stays in flight until `finish()` sends the rest. */
export interface HeldUpload {
  key: string;
  body: Buffer;
  /** Sends the rest of the body; resolves with the status and JSON answer. */
  finish(): Promise<{ status: number; body: { error?: { code?: string } } & Record<string, unknown> }>;
}

export async function heldUpload(base: string, key: string, size = 64 * 1024): Promise<HeldUpload> {
  const body = randomBytes(size);
  const url = new URL(`/media/${key}`, base);
  const req = http.request(url, { method: 'PUT', headers: { 'Content-Length': String(size), 'Content-Type': 'application/octet-stream' } });
  const answer = new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
    });
    req.on('error', reject);
  });
  answer.catch(() => undefined);
  req.write(body.subarray(0, size / 2));
  // Give the server time to admit the request and start streaming it.
  await new Promise((r) => setTimeout(r, 50));
  return {
    key,
    body,
    async finish() {
      req.end(body.subarray(size / 2));
      return answer as Promise<{ status: number; body: { error?: { code?: string } } & Record<string, unknown> }>;
    },
  };
}
