import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { httpCall } from '../../src/adapters/http-call.ts';

const ROOT = join(__dirname, '..', '..');

/** A TCP server that handles each connection with `onConnection`; answers its port. */
async function tcpServer(onConnection: (socket: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env }, timeout: 60_000 },
      (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr: String(stderr) }),
    );
  });
}

describe('httpCall: every request of a command-line tool settles', () => {
  it('a peer that resets each connection right after accepting it fails every call at once (fetch leaves most unsettled)', async () => {
    const server = await tcpServer((socket) => socket.destroy());
    try {
      const started = Date.now();
      const outcomes = await Promise.all(
        Array.from({ length: 30 }, () =>
          httpCall(`http://127.0.0.1:${server.port}/admin/read-only`, { method: 'PUT', body: '{}', timeoutMs: 20_000 }).then(
            () => 'answered',
            (err: Error) => err.message,
          ),
        ),
      );
      for (const o of outcomes) expect(o).toMatch(/^connection failed: .+ \((ECONNRESET|EPIPE)\)$/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await server.close();
    }
  });

  it('a peer that never answers costs the bound; one that cuts its answer off fails; a whole answer is read', async () => {
    const hung = await tcpServer((socket) => socket.resume());
    const cut = await tcpServer((socket) =>
      socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":', () => socket.destroy())),
    );
    const whole = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () =>
        res
          .writeHead(201, { 'Content-Type': 'application/json' })
          .end(JSON.stringify({ method: req.method, auth: req.headers.authorization, body })),
      );
    });
    await new Promise<void>((resolve) => whole.listen(0, '127.0.0.1', resolve));
    try {
      await expect(httpCall(`http://127.0.0.1:${hung.port}/`, { method: 'GET', timeoutMs: 300 })).rejects.toThrow(
        'no answer within 300 ms',
      );
      await expect(httpCall(`http://127.0.0.1:${cut.port}/`, { method: 'GET', timeoutMs: 5000 })).rejects.toThrow(
        /cut off|ECONNRESET|aborted/,
      );
      const answer = await httpCall(`http://127.0.0.1:${(whole.address() as net.AddressInfo).port}/x`, {
        method: 'POST',
        headers: { Authorization: 'Bearer t' },
        body: '{"a":"é"}',
        timeoutMs: 5000,
      });
      expect(answer.status).toBe(201);
      expect(JSON.parse(answer.text)).toEqual({ method: 'POST', auth: 'Bearer t', body: '{"a":"é"}' });
    } finally {
      await hung.close();
      await cut.close();
      await new Promise<void>((resolve) => whole.close(() => resolve()));
    }
  });

  it('a tool whose main waits on nothing that can end fails instead of exiting 0', async () => {
    const stuck = await run(
      join(ROOT, 'node_modules', '.bin', 'tsx'),
      ['-e', "import { runMain } from './src/adapters/http-call.ts'; runMain(() => new Promise<number>(() => undefined), 'demo failed');"],
      {},
    );
    expect(stuck.code).toBe(1);
    expect(stuck.stderr).toContain('demo failed: stopped while waiting on something that can no longer answer');
  }, 60_000);

  it('monitor-recovery.sh against an API that resets its connection: exit 3 (lost), never 0 (resolved)', async () => {
    const server = await tcpServer((socket) => socket.destroy());
    try {
      for (let i = 0; i < 5; i += 1) {
        const r = await run('bash', [join(ROOT, 'scripts', 'dr', 'monitor-recovery.sh'), '--incident-id', 'INC-20261126-1'], {
          SAV3_API_URL: `http://127.0.0.1:${server.port}`,
          SAV3_ADMIN_TOKEN: 'viewer-token-for-the-test',
        });
        expect(r.code).toBe(3);
        expect(r.stderr).toMatch(/could not reach|lost the connection/);
      }
    } finally {
      await server.close();
    }
  }, 60_000);
});
