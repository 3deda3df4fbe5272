import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client, type ItemBucketMetadata } from 'minio';
import type { MediaBackendConfig } from '../config/config.ts';
import { ObjectMissingError, type ObjectStore, type StoredObjectInfo } from './object-store.ts';

/** Idle-socket bound for request traffic: a hung S3 server fails a request instead of holding it. */
const REQUEST_IDLE_TIMEOUT_MS = 30_000;
const PRESIGN_SECONDS = 15 * 60;

type Transport = Pick<typeof http, 'request'>;

/** A transport that gives up on a socket idle for `timeoutMs` and obeys an abort signal. */
function boundedTransport(secure: boolean, timeoutMs: number, signal?: AbortSignal): Transport {
  const base = secure ? https : http;
  return {
    request: ((options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void) => {
      const req = base.request({ ...options, signal }, callback);
      req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`S3 request timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      return req;
    }) as typeof http.request,
  };
}

export class MinioObjectStore implements ObjectStore {
  readonly backend;
  readonly bucket;
  private readonly client: Client;
  private readonly agent: http.Agent;
  private readonly secure: boolean;

  constructor(private readonly config: MediaBackendConfig) {
    this.backend = config.name;
    this.bucket = config.bucket;
    this.secure = config.endpoint.startsWith('https:');
    this.agent = new (this.secure ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: 64 });
    this.client = this.createClient(boundedTransport(this.secure, REQUEST_IDLE_TIMEOUT_MS), this.agent);
  }

  private createClient(transport: Transport, agent: http.Agent, retries = true): Client {
    const url = new URL(this.config.endpoint);
    return new Client({
      endPoint: url.hostname,
      port: url.port ? Number(url.port) : undefined,
      useSSL: this.secure,
      accessKey: this.config.accessKey ?? '',
      secretKey: this.config.secretKey ?? '',
      region: this.config.region,
      pathStyle: true,
      transport: transport as never,
      transportAgent: agent,
      retryOptions: { disableRetry: !retries },
    });
  }

  async checkBucket(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    // A client of its own (no keep-alive, no retries) so a probe never waits behind request traffic.
    const agent = new (this.secure ? https.Agent : http.Agent)({ keepAlive: false });
    const probe = this.createClient(boundedTransport(this.secure, timeoutMs, signal), agent, false);
    try {
      const exists = await probe.bucketExists(this.bucket);
      if (!exists) throw Object.assign(new Error(`bucket ${this.bucket} does not exist`), { code: 'NoSuchBucket' });
    } finally {
      agent.destroy();
    }
  }

  async put(key: string, body: Readable, size: number, contentType: string): Promise<void> {
    // A presigned PUT streams the body as it arrives; the client's putObject would buffer up to a
    // whole part (64 MiB) in memory to sign its payload.
    const url = new URL(await this.client.presignedPutObject(this.bucket, key, PRESIGN_SECONDS));
    const transport = boundedTransport(this.secure, REQUEST_IDLE_TIMEOUT_MS);
    const req = transport.request({
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port,
      path: `${url.pathname}${url.search}`,
      method: 'PUT',
      agent: this.agent,
      headers: { 'Content-Length': String(size), 'Content-Type': contentType },
    });
    const response = new Promise<http.IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    await Promise.all([pipeline(body, req), response]).catch((err) => {
      req.destroy();
      throw err;
    });
    const res = await response;
    const text = await readText(res);
    if (res.statusCode !== 200) {
      const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP${res.statusCode}`;
      throw Object.assign(new Error(`S3 PUT failed: ${code}`), { code });
    }
  }

  async get(key: string): Promise<Readable> {
    try {
      return await this.client.getObject(this.bucket, key);
    } catch (err) {
      if (isMissing(err)) throw new ObjectMissingError(this.backend, key);
      throw err;
    }
  }

  async stat(key: string): Promise<StoredObjectInfo | undefined> {
    try {
      const stat = await this.client.statObject(this.bucket, key);
      const meta = stat.metaData as ItemBucketMetadata;
      return { key, size: stat.size, etag: stat.etag, contentType: meta['content-type'] as string | undefined };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async remove(key: string): Promise<void> {
    await this.client.removeObject(this.bucket, key);
  }

  async *list(prefix: string): AsyncIterable<StoredObjectInfo> {
    const stream = this.client.listObjectsV2(this.bucket, prefix, true);
    for await (const item of stream as AsyncIterable<{ name?: string; size: number; etag?: string }>) {
      if (item.name !== undefined) yield { key: item.name, size: item.size, etag: item.etag ?? '' };
    }
  }

  close(): void {
    this.agent.destroy();
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code === 'NoSuchKey' || code === 'NotFound';
}

async function readText(res: http.IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of res) {
    if (text.length < 64 * 1024) text += String(chunk);
  }
  return text;
}
