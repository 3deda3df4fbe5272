import net from 'node:net';

/** A server that accepts TCP connections and never answers: the worst kind of dead dependency. */
export interface HungServer {
  port: number;
  url: string;
  /** Connections accepted so far. */
  connections: number;
  /** Connections currently open. */
  open(): number;
  close(): Promise<void>;
}

export async function startHungServer(): Promise<HungServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    handle.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    // Read and discard, so a client closing its end is noticed (a paused socket never sees EOF).
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const handle: HungServer = {
    port,
    url: `127.0.0.1:${port}`,
    connections: 0,
    open: () => sockets.size,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return handle;
}
