// An in-process S3 server (s3rver) for tests, benchmarks, drills and the local stack.
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

// s3rver keeps its credentials in one registry for the whole process.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account') as { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } };

export interface S3ServerHandle {
  endpoint: string;
  port: number;
  bucket: string;
  accessKey: string;
  secretKey: string;
  directory: string;
  /** Stops listening; the data directory stays so the server can be started again. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops and removes the data directory. */
  destroy(): Promise<void>;
}

export interface S3ServerOptions {
  port?: number;
  bucket: string;
  accessKey?: string;
  secretKey?: string;
  directory?: string;
}

export async function startS3Server(options: S3ServerOptions): Promise<S3ServerHandle> {
  const accessKey = options.accessKey ?? 'local-access-key';
  const secretKey = options.secretKey ?? 'local-secret-key-for-s3rver';
  DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
  const directory = options.directory ?? (await mkdtemp(join(tmpdir(), 'sav3-s3-')));
  let port = options.port ?? 0;
  let server: S3rver | undefined;
  const handle: S3ServerHandle = {
    endpoint: '',
    port,
    bucket: options.bucket,
    accessKey,
    secretKey,
    directory,
    async start() {
      server = new S3rver({ address: '127.0.0.1', port, silent: true, directory, configureBuckets: [{ name: options.bucket, configs: [] }] });
      const address = (await server.run()) as AddressInfo;
      port = address.port;
      handle.port = port;
      handle.endpoint = `http://127.0.0.1:${port}`;
    },
    async stop() {
      const s = server;
      server = undefined;
      if (!s) return;
      // close() waits for open keep-alive sockets; cut them so a "dead" server is dead at once.
      const http = (s as unknown as { httpServer?: { closeAllConnections?: () => void } }).httpServer;
      const closing = s.close();
      http?.closeAllConnections?.();
      await closing;
    },
    async destroy() {
      await handle.stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
  await handle.start();
  return handle;
}

/** The MEDIA_<PRIMARY|BACKUP>_* variables that point the service at this server. */
export function mediaEnv(prefix: 'PRIMARY' | 'BACKUP', s3: S3ServerHandle): Record<string, string> {
  return {
    [`MEDIA_${prefix}_ENDPOINT`]: s3.endpoint,
    [`MEDIA_${prefix}_ACCESS_KEY`]: s3.accessKey,
    [`MEDIA_${prefix}_SECRET_KEY`]: s3.secretKey,
    [`MEDIA_${prefix}_BUCKET`]: s3.bucket,
  };
}
