import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedMessage {
  key: string;
  body: { text: string; incidentId?: string; kind?: string };
  status: number;
  at: number;
}

/**
 * A Slack/Mattermost-like webhook receiver for tests: records every request with its
 * Idempotency-Key, and answers as told: 'ok' (200), 'fail' (503), 'hang' (never answers).
 */
export async function startWebhookReceiver() {
  let mode: 'ok' | 'fail' | 'hang' = 'ok';
  const received: ReceivedMessage[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (raw += c));
    req.on('end', () => {
      if (mode === 'hang') return;
      const status = mode === 'ok' ? 200 : 503;
      let body: ReceivedMessage['body'];
      try {
        body = JSON.parse(raw) as ReceivedMessage['body'];
      } catch {
        body = { text: '' };
      }
      received.push({ key: String(req.headers['idempotency-key']), body, status, at: Date.now() });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'down');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/sav3`,
    received,
    /** Messages the receiver accepted (2xx). */
    accepted: () => received.filter((r) => r.status === 200),
    setMode(next: 'ok' | 'fail' | 'hang') {
      mode = next;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
