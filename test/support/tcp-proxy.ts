import net from 'node:net';

/**
 * A TCP proxy in front of a real server, to make a dependency die, hang or come back on demand:
 * `mode` is 'pass' (forward), 'refuse' (close new and existing connections) or 'hang'
 * (accept and never answer).
 */
export interface TcpProxy {
  port: number;
  setMode(mode: 'pass' | 'refuse' | 'hang'): void;
  close(): Promise<void>;
}

/** `targetPort` may be a function, for a target that comes back on another port (a restarted process). */
export async function startTcpProxy(targetPort: number | (() => number), targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let mode: 'pass' | 'refuse' | 'hang' = 'pass';
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    if (mode === 'refuse') {
      client.destroy();
      return;
    }
    if (mode === 'hang') {
      client.resume();
      return;
    }
    const upstream = net.connect(typeof targetPort === 'function' ? targetPort() : targetPort, targetHost);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    setMode(next) {
      mode = next;
      if (next !== 'pass') for (const socket of sockets) socket.destroy();
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
