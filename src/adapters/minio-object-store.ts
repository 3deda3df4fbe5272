import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { Client, type ItemBucketMetadata } from 'minio';
import type { MediaBackendConfig } from '../config/config.ts';
import { sendExactly } from '../lib/send-exactly.ts';
import { S3Presigner } from './s3-presigner.ts';
import { ObjectMissingError, PoolLimiter, StoreSaturatedError, type ObjectStore, type StoredObjectInfo } from './object-store.ts';

const PRESIGN_SECONDS = 15 * 60;

export interface MinioStoreOptions {
  /** Bound on one S3 request reaching its response, and on a socket idle mid-body. */
  timeoutMs: number;
  /** Sockets per pool; uploads, downloads and control requests each have their own pool. */
  poolSize: number;
}

type Transport = Pick<typeof http, 'request'>;

function timeoutError(ms: number): Error {
  return Object.assign(new Error(`S3 request timed out after ${ms} ms`), { code: 'ETIMEDOUT' });
}

/** A transport that gives up on a socket idle for `timeoutMs` and obeys an abort signal. */
function boundedTransport(secure: boolean, timeoutMs: number, signal?: AbortSignal): Transport {
  const base = secure ? https : http;
  return {
    request: ((options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void) => {
      const req = base.request({ ...options, signal }, callback);
      req.setTimeout(timeoutMs, () => req.destroy(timeoutError(timeoutMs)));
      return req;
    }) as typeof http.request,
  };
}

/**
 * An S3 bucket through the MinIO client. Bodies go through presigned URLs on pools of their own
 * (uploads, downloads), each bounded: a pool at its bound refuses with StoreSaturatedError instead
 * of queueing, so slow clients cannot stall the other direction or control requests.
 */
export class MinioObjectStore implements ObjectStore {
  readonly backend;
  readonly bucket;
  private readonly client: Client;
  private readonly controlAgent: http.Agent;
  private readonly uploadAgent: http.Agent;
  private readonly downloadAgent: http.Agent;
  private readonly uploads: PoolLimiter;
  private readonly downloads: PoolLimiter;
  private readonly secure: boolean;
  private readonly timeoutMs: number;
  /** Undefined for the global AWS endpoint, whose host the MinIO client rewrites per region. */
  private readonly presigner: S3Presigner | undefined;

  constructor(
    private readonly config: MediaBackendConfig,
    options: MinioStoreOptions = { timeoutMs: 10_000, poolSize: 64 },
  ) {
    this.backend = config.name;
    this.bucket = config.bucket;
    this.secure = config.endpoint.startsWith('https:');
    this.timeoutMs = options.timeoutMs;
    const Agent = this.secure ? https.Agent : http.Agent;
    // Idle keep-alive sockets are dropped after 4 s, before a server's own keep-alive timeout (5 s
    // for Node servers) can close one just as a request reuses it (ECONNRESET).
    this.controlAgent = new Agent({ keepAlive: true, maxSockets: 16, noDelay: true, timeout: 4000 } as http.AgentOptions);
    this.uploadAgent = new Agent({ keepAlive: true, maxSockets: options.poolSize, noDelay: true, timeout: 4000 } as http.AgentOptions);
    this.downloadAgent = new Agent({ keepAlive: true, maxSockets: options.poolSize, noDelay: true, timeout: 4000 } as http.AgentOptions);
    this.uploads = new PoolLimiter('upload', options.poolSize);
    this.downloads = new PoolLimiter('download', options.poolSize);
    this.client = this.createClient(boundedTransport(this.secure, this.timeoutMs), this.controlAgent);
    const host = new URL(config.endpoint).hostname;
    this.presigner =
      /^s3(\.cn-north-1)?\.amazonaws\.com(\.cn)?$/.test(host) && config.accessKey
        ? undefined
        : new S3Presigner(config.endpoint, config.bucket, config.region, config.accessKey ?? '', config.secretKey ?? '');
  }

  /** A presigned URL for one request on `key`. */
  private async presign(method: 'GET' | 'PUT', key: string): Promise<URL> {
    if (this.presigner) return new URL(this.presigner.url(method, key, PRESIGN_SECONDS));
    return new URL(
      method === 'PUT'
        ? await this.client.presignedPutObject(this.bucket, key, PRESIGN_SECONDS)
        : await this.client.presignedGetObject(this.bucket, key, PRESIGN_SECONDS),
    );
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

  /** One request on a presigned URL; the response arrives within the timeout or the request fails. */
  private send(
    url: URL,
    method: 'GET' | 'PUT',
    agent: http.Agent,
    headers: Record<string, string> = {},
  ): { req: http.ClientRequest; response: Promise<http.IncomingMessage> } {
    const req = (this.secure ? https : http).request({
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port,
      path: `${url.pathname}${url.search}`,
      method,
      agent,
      headers,
    });
    // Idle bound on the socket (a server that stops sending mid-body) ...
    req.setTimeout(this.timeoutMs, () => req.destroy(timeoutError(this.timeoutMs)));
    const response = new Promise<http.IncomingMessage>((resolve, reject) => {
      // ... and, for a GET, a hard bound on reaching the response at all (a PUT's response comes
      // only after its body, which the idle bound covers).
      const timer = method === 'GET' ? setTimeout(() => req.destroy(timeoutError(this.timeoutMs)), this.timeoutMs) : undefined;
      req.once('response', (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    response.catch(() => undefined);
    return { req, response };
  }

  async put(key: string, body: Readable, size: number, contentType: string): Promise<void> {
    const release = this.uploads.tryAcquire();
    if (!release) throw new StoreSaturatedError(this.backend, 'upload');
    try {
      // A presigned PUT streams the body as it arrives; the client's putObject would buffer up to
      // a whole part (64 MiB) in memory to sign its payload.
      const url = await this.presign('PUT', key);
      const { req, response } = this.send(url, 'PUT', this.uploadAgent, { 'Content-Length': String(size), 'Content-Type': contentType });
      await Promise.all([sendExactly(body, req, size), response]).catch((err) => {
        req.destroy();
        throw err;
      });
      const res = await response;
      const text = await readText(res);
      if (res.statusCode !== 200) {
        const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP${res.statusCode}`;
        throw Object.assign(new Error(`S3 PUT failed: ${code}`), { code });
      }
    } finally {
      release();
    }
  }

  async get(key: string): Promise<Readable> {
    const release = this.downloads.tryAcquire();
    if (!release) throw new StoreSaturatedError(this.backend, 'download');
    try {
      const url = await this.presign('GET', key);
      const { req, response } = this.send(url, 'GET', this.downloadAgent);
      req.end();
      const res = await response;
      if (res.statusCode === 404) {
        res.resume();
        throw new ObjectMissingError(this.backend, key);
      }
      if (res.statusCode !== 200) {
        const text = await readText(res);
        const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP${res.statusCode}`;
        throw Object.assign(new Error(`S3 GET failed: ${code}`), { code });
      }
      // The slot is held until the body is consumed or the stream is destroyed.
      res.once('close', release);
      return res;
    } catch (err) {
      release();
      throw err;
    }
  }

  async stat(key: string): Promise<StoredObjectInfo | undefined> {
    try {
      const stat = await this.client.statObject(this.bucket, key);
      const meta = stat.metaData as ItemBucketMetadata;
      return {
        key,
        size: stat.size,
        etag: stat.etag,
        contentType: meta['content-type'] as string | undefined,
        lastModified: stat.lastModified,
      };
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
    for await (const item of stream as AsyncIterable<{ name?: string; size: number; etag?: string; lastModified?: Date }>) {
      if (item.name !== undefined) yield { key: item.name, size: item.size, etag: item.etag ?? '', lastModified: item.lastModified };
    }
  }

  saturated(): string[] {
    return [this.uploads, this.downloads].filter((p) => p.full).map((p) => p.name);
  }

  close(): void {
    this.controlAgent.destroy();
    this.uploadAgent.destroy();
    this.downloadAgent.destroy();
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
