// An in-process S3 server (s3rver) for tests, benchmarks, drills and the local stack, made to behave
// like MinIO and AWS S3 where the media invariants depend on it:
// - a PUT is atomic: the body goes to a temporary file that is renamed into place only once the
//   whole declared length has arrived; an aborted PUT publishes nothing and readers never see half
//   a body (s3rver itself writes in place);
// - ListObjectsV2 pages past 1,000 objects: s3rver's continuation token uses DES, which OpenSSL 3
//   (Node 20) refuses, so the wrapper answers V2 listings itself with a plain start-after token;
// - HEAD on a bucket (the health probe's bucket check) costs the same whatever the bucket holds:
//   s3rver answers it with its GET handler, which lists and reads the metadata of up to 1,000
//   objects, so once a bucket held a few thousand objects the probes of two instances, once a
//   second each, took most of the process's CPU (a sync of 1,050 objects slowed from 19 s to
//   over 400 s on a loaded machine).
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import S3rver from 's3rver';

// s3rver keeps its credentials in one registry for the whole process.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account') as { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3Object = require('s3rver/lib/models/object') as { ALLOWED_METADATA: string[] };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const bucketController = require('s3rver/lib/controllers/bucket') as { getBucket(ctx: KoaContext): Promise<void> };

// The router calls the controller through its exports at request time, after authentication and
// the bucket's existence check: HEAD ends there, as S3's HeadBucket does (no listing).
const listBucket = bucketController.getBucket;
bucketController.getBucket = async (ctx) => {
  if (ctx.method !== 'HEAD') return listBucket(ctx);
  ctx.status = 200;
};

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

interface StoreObject {
  bucket: string;
  key: string;
  content: IncomingMessage | Buffer;
  metadata: Record<string, string>;
}

interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putObject(object: StoreObject): Promise<{ size: number; md5: string }>;
  listObjects(
    bucket: string,
    options: { prefix?: string; startAfter?: string; maxKeys?: number; delimiter?: string },
  ): Promise<{
    objects: { key: string; size: number; lastModifiedDate: Date; metadata: Record<string, string> }[];
    commonPrefixes: string[];
    isTruncated: boolean;
  }>;
}

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | undefined>;
  status: number;
  type: string;
  body: unknown;
}

/** Write-then-rename: the object file appears, with its metadata already in place, only when complete. */
function atomicPut(store: FilesystemStore) {
  return async (object: StoreObject): Promise<{ size: number; md5: string }> => {
    const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
    const metadataPath = store.getResourcePath(object.bucket, object.key, 'metadata.json');
    const dir = dirname(objectPath);
    await mkdir(dir, { recursive: true });
    // Short temporary names (a long key segment must not overflow the file-name limit); the
    // listing ignores them because they do not end in the object suffix.
    const tmp = join(dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const md5 = createHash('md5');
    let size = 0;
    try {
      if (Buffer.isBuffer(object.content)) {
        md5.update(object.content);
        size = object.content.length;
        await writeFile(tmp, object.content);
      } else {
        const req = object.content;
        const counter = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            md5.update(chunk);
            size += chunk.length;
            cb(null, chunk);
          },
        });
        const aborted = new Promise<never>((_, reject) => {
          req.once('aborted', () => reject(new Error('upload aborted')));
          req.once('close', () => {
            if (!req.complete) reject(new Error('upload aborted'));
          });
        });
        aborted.catch(() => undefined);
        await Promise.race([pipeline(req, counter, createWriteStream(tmp)), aborted]);
        if (!req.complete) throw new Error('upload aborted');
        const declared = object.metadata['content-length'];
        if (declared !== undefined && Number(declared) !== size) throw new Error(`upload incomplete: ${size} of ${declared} bytes`);
      }
      const digest = md5.digest('hex');
      const json: Record<string, string> = {};
      for (const [k, v] of Object.entries(object.metadata)) {
        if (S3Object.ALLOWED_METADATA.includes(k) || k.startsWith('x-amz-meta-')) json[k] = v;
      }
      const tmpMeta = `${tmp}.meta`;
      const tmpMd5 = `${tmp}.md5`;
      await writeFile(tmpMeta, JSON.stringify(json));
      await writeFile(tmpMd5, digest);
      await rename(tmpMeta, metadataPath);
      await rename(tmpMd5, `${objectPath}.md5`);
      await rename(tmp, objectPath);
      return { size, md5: digest };
    } catch (err) {
      await Promise.all([rm(tmp, { force: true }), rm(`${tmp}.meta`, { force: true }), rm(`${tmp}.md5`, { force: true })]);
      throw err;
    }
  };
}

function xml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

/** ListObjectsV2 with an opaque start-after token, as S3 pages (1,000 keys a page at most). */
function listV2(store: FilesystemStore) {
  return async (ctx: KoaContext, next: () => Promise<void>): Promise<void> => {
    const bucket = /^\/([^/]+)\/?$/.exec(ctx.path)?.[1];
    if (ctx.method !== 'GET' || !bucket || ctx.query['list-type'] !== '2') return next();
    const token = ctx.query['continuation-token'];
    const startAfter = token ? Buffer.from(token, 'base64url').toString('utf8') : (ctx.query['start-after'] ?? '');
    const maxKeys = Math.min(1000, Math.max(0, Number(ctx.query['max-keys'] ?? 1000) || 1000));
    const prefix = ctx.query.prefix ?? '';
    const delimiter = ctx.query.delimiter || undefined;
    let result;
    try {
      result = await store.listObjects(bucket, { prefix, startAfter, maxKeys, delimiter });
    } catch {
      return next();
    }
    const last = result.objects.at(-1)?.key;
    const parts = [
      `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`,
      `<Name>${xml(bucket)}</Name><Prefix>${xml(prefix)}</Prefix><KeyCount>${result.objects.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys>`,
      `<IsTruncated>${result.isTruncated}</IsTruncated>`,
      token ? `<ContinuationToken>${xml(token)}</ContinuationToken>` : '',
      result.isTruncated && last ? `<NextContinuationToken>${Buffer.from(last).toString('base64url')}</NextContinuationToken>` : '',
      ...result.objects.map(
        (o) =>
          `<Contents><Key>${xml(o.key)}</Key><LastModified>${new Date(o.lastModifiedDate).toISOString()}</LastModified><ETag>${xml(o.metadata.etag ?? '')}</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
      ),
      ...result.commonPrefixes.map((p) => `<CommonPrefixes><Prefix>${xml(p)}</Prefix></CommonPrefixes>`),
      '</ListBucketResult>',
    ];
    ctx.status = 200;
    ctx.type = 'application/xml';
    ctx.body = parts.join('');
  };
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
      const s = new S3rver({
        address: '127.0.0.1',
        port,
        silent: true,
        directory,
        configureBuckets: [{ name: options.bucket, configs: [] }],
      });
      const internals = s as unknown as { store: FilesystemStore; middleware: unknown[] };
      internals.store.putObject = atomicPut(internals.store);
      internals.middleware.unshift(listV2(internals.store));
      server = s;
      const address = (await s.run()) as AddressInfo;
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
/** What a client needs to reach an S3 server. */
export type S3Endpoint = Pick<S3ServerHandle, 'endpoint' | 'bucket' | 'accessKey' | 'secretKey'>;

export function mediaEnv(prefix: 'PRIMARY' | 'BACKUP', s3: S3Endpoint): Record<string, string> {
  return {
    [`MEDIA_${prefix}_ENDPOINT`]: s3.endpoint,
    [`MEDIA_${prefix}_ACCESS_KEY`]: s3.accessKey,
    [`MEDIA_${prefix}_SECRET_KEY`]: s3.secretKey,
    [`MEDIA_${prefix}_BUCKET`]: s3.bucket,
  };
}
