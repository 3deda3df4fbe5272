// Shared by the failover drills: the upload loop that plays the application, and the runbook
// scripts run as an operator would.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config/config.ts';
import { createLogger } from '../src/logger.ts';
import { createService, type Service } from '../src/service.ts';
import type { PgCluster } from './pg-cluster.ts';
import { mediaEnv, type S3ServerHandle } from './s3-server.ts';
import { sha256Hex } from './common.ts';

const run = promisify(execFile);

/**
 * One silent service instance on a drill's own primary + replica and S3 server, with a fresh
 * operator token, its own DR state file and Redis key prefix (never an earlier run's state).
 */
export async function startClusterService(
  name: string,
  cluster: PgCluster,
  s3: S3ServerHandle,
  env: Record<string, string> = {},
): Promise<{ service: Service; token: string }> {
  const token = randomBytes(24).toString('base64url');
  const service = await createService(
    loadConfig({
      DATABASE_URL: cluster.primary.url(),
      DATABASE_REPLICA_URL: cluster.replica.url(),
      REDIS_URL: process.env.REDIS_URL,
      DR_STATE_FILE: join(tmpdir(), `sav3-${name}-${process.pid}.json`),
      ...mediaEnv('PRIMARY', s3),
      ADMIN_TOKENS: `${name}:operator:${token}`,
      PORT: '0',
      HOST: '127.0.0.1',
      INSTANCE_ID: name,
      ...env,
    }),
    createLogger('silent'),
    { redisKeyPrefix: `${name}:${Date.now()}:` },
  );
  return { service, token };
}

export interface UploadLoop {
  /** key → sha256 of every upload answered 201. */
  acked: Map<string, string>;
  /** Uploads refused after the disaster began, with their status and Retry-After. */
  refused: { status: number; retryAfter: string | null; code: string }[];
  /** Marks the disaster; returns its time. */
  disaster(): number;
  /** Resolves with the time of the first accepted upload after the disaster (or NaN after timeoutMs). */
  firstAcceptedAfterDisaster(timeoutMs: number): Promise<number>;
  stop(): Promise<void>;
}

export function startUploadLoop(base: string, keyPrefix: string, size: number): UploadLoop {
  const acked = new Map<string, string>();
  const refused: UploadLoop['refused'] = [];
  let disasterAt = 0;
  let firstAfter = 0;
  let running = true;
  let n = 0;
  const loop = (async () => {
    while (running) {
      const key = `${keyPrefix}-${(n += 1)}`;
      const body = randomBytes(size);
      const res = await fetch(`${base}/media/${key}`, { method: 'PUT', body }).catch(() => undefined);
      if (res?.status === 201) {
        acked.set(key, sha256Hex(body));
        if (disasterAt && !firstAfter) firstAfter = performance.now();
      } else if (res) {
        const json = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
        if (disasterAt) refused.push({ status: res.status, retryAfter: res.headers.get('retry-after'), code: json.error?.code ?? '?' });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    acked,
    refused,
    disaster: () => (disasterAt = performance.now()),
    async firstAcceptedAfterDisaster(timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      while (!firstAfter && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return firstAfter || NaN;
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Runs a runbook script from scripts/dr against the API; returns how long it took. */
export async function runbookScript(base: string, token: string, name: string, args: string[]): Promise<number> {
  const started = performance.now();
  await run('bash', [join(__dirname, '..', 'scripts', 'dr', name), ...args], {
    env: { ...process.env, SAV3_API_URL: base, SAV3_ADMIN_TOKEN: token },
  });
  return Math.round(performance.now() - started);
}

/** Refusals by status and error code, and how many lacked 503 + Retry-After. */
export function refusalSummary(refused: UploadLoop['refused']) {
  const byCode: Record<string, number> = {};
  for (const r of refused) byCode[`${r.status} ${r.code}`] = (byCode[`${r.status} ${r.code}`] ?? 0) + 1;
  return { byCode, withoutRetryAfter: refused.filter((r) => r.status !== 503 || r.retryAfter === null).length };
}

/**
 * Reads every acknowledged upload back through the API; counts those missing, with a wrong sha256,
 * or (when `backend` is given) served by another backend.
 */
export async function countUnreadable(base: string, acked: ReadonlyMap<string, string>, backend?: string): Promise<number> {
  let missing = 0;
  for (const [key, digest] of acked) {
    const res = await fetch(`${base}/media/${key}`);
    const body = Buffer.from(await res.arrayBuffer());
    const wrongBackend = backend !== undefined && res.headers.get('x-media-backend') !== backend;
    if (res.status !== 200 || wrongBackend || sha256Hex(body) !== digest) missing += 1;
  }
  return missing;
}
