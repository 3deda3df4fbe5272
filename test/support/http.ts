import http from 'node:http';

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** Sends a body with Transfer-Encoding: chunked (no Content-Length), chunk by chunk. */
export function putChunked(baseUrl: string, path: string, chunks: Buffer[], headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${baseUrl}${path}`, { method: 'PUT', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    // The server may answer (413) and close before every chunk is written.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

export interface DoctoredApi {
  url: string;
  close(): Promise<void>;
}

/**
 * An HTTP server in front of a real API that answers some requests itself (`answer` returns the
 * status and body to send, e.g. a proxy's HTML page or `{}`) and forwards the others unchanged.
 */
export async function startDoctoredApi(
  targetUrl: string,
  answer: (method: string, path: string) => { status: number; body: string; contentType?: string } | undefined,
): Promise<DoctoredApi> {
  const target = new URL(targetUrl);
  const server = http.createServer((req, res) => {
    const own = answer(req.method ?? 'GET', req.url ?? '/');
    if (own) {
      req.resume();
      res.writeHead(own.status, { 'Content-Type': own.contentType ?? 'text/html' }).end(own.body);
      return;
    }
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
