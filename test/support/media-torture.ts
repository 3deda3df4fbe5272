// The media torture run: writers, deleters and readers over a small key set through two instances
// while S3 servers, Redis, PostgreSQL and one instance are killed and restarted at random; then a
// checker walks every key and every stored version and lists every violation of the invariants.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { MinioObjectStore } from '../../src/adapters/minio-object-store.ts';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { createScratchDatabase } from '../../support/scratch-database.ts';
import { mediaEnv, startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { ADMIN_TOKENS, OPERATOR_TOKEN, startInstance, type TestInstance } from './instance.ts';
import { startOwnRedis } from '../../support/redis-server.ts';
import { startTcpProxy } from './tcp-proxy.ts';
import { freePort, seededRandom, sha256Hex, sleep } from '../../support/common.ts';

const ROOT = join(__dirname, '..', '..');
const GRACE_SECONDS = 4;

/** Every kind of fault the torture injects. */
export const FAULTS = ['primary', 'backup', 'redis', 'postgres', 'instance', 'switch', 'sync'] as const;
export type Fault = (typeof FAULTS)[number];

/** `n` bytes from `random` (a PUT body: distinct per PUT, reproducible from the seed). */
function randomBody(random: () => number, n: number): Buffer {
  const body = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) {
    const word = Math.floor(random() * 4294967296);
    for (let j = 0; j < 4 && i + j < n; j += 1) body[i + j] = (word >>> (8 * j)) & 0xff;
  }
  return body;
}

/** The seed of a run: TORTURE_SEED when set (a replay), else a fresh one. */
export function tortureSeed(): number {
  const raw = process.env.TORTURE_SEED;
  if (raw === undefined || raw === '') return randomInt(2 ** 31);
  const seed = Number(raw);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new Error(`TORTURE_SEED must be an integer in [0, 2^32), not ${raw}`);
  return seed;
}

type Outcome = 'ack' | 'refused' | 'uncertain' | 'absent';
interface Op {
  key: string;
  kind: 'put' | 'delete';
  sha?: string;
  start: number;
  end: number;
  outcome: Outcome;
}

export interface TortureReport {
  seed: number;
  faultMix: Fault[];
  /** The faults in the order they were injected (with their down time in ms). */
  schedule: string[];
  ops: Record<string, number>;
  faults: Record<string, number>;
  reads: { ok: number; notFound: number; unavailable: number };
  keys: number;
  versionsChecked: number;
  objectsChecked: number;
  violations: string[];
}

function classify(status: number, code: string | undefined): Outcome {
  if (status === 201 || status === 204) return 'ack';
  if (status === 404) return 'absent';
  if (status === 503 && code === 'outcome_unknown') return 'uncertain';
  if (status >= 400 && status < 600) return 'refused';
  return 'uncertain';
}

function networkOutcome(err: unknown): Outcome {
  // A connection never made delivered nothing; anything later may have been applied.
  const code = (err as { cause?: { code?: string } }).cause?.code;
  return code === 'ECONNREFUSED' ? 'refused' : 'uncertain';
}

/** A service instance in a child process, to be killed with SIGKILL (or paused with SIGSTOP) and started again. */
export async function childInstance(env: Record<string, string>) {
  let port = 0;
  let child: ChildProcess | undefined;
  let log = '';
  // A stable address in front of the process, which comes back on a new port each start (a
  // killed process's port may be taken by then).
  const proxy = await startTcpProxy(() => port);
  const url = `http://127.0.0.1:${proxy.port}`;
  // Its own state file, kept across its restarts (the default under the checkout would be shared
  // with every other run).
  const stateFile = join(tmpdir(), `sav3-torture-${env.INSTANCE_ID}-${process.pid}.json`);
  const handle = {
    url,
    async start() {
      port = await freePort();
      child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', DR_STATE_FILE: stateFile, ...env, PORT: String(port), HOST: '127.0.0.1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout!.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-200_000)));
      child.stderr!.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-200_000)));
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        try {
          if ((await fetch(`${url}/health/live`, { signal: AbortSignal.timeout(500) })).ok) return;
        } catch {
          /* not yet */
        }
        await sleep(100);
      }
      throw new Error('child instance did not start');
    },
    /** Sends `signal` to the process (e.g. SIGSTOP / SIGCONT to pause it as a GC pause or CPU steal would). */
    signal(signal: NodeJS.Signals) {
      child?.kill(signal);
    },
    kill() {
      child?.kill('SIGKILL');
      child = undefined;
      proxy.setMode('refuse');
      proxy.setMode('pass');
    },
    close: async () => {
      await proxy.close();
      rmSync(stateFile, { force: true });
    },
    logs: () => log,
  };
  await handle.start();
  return handle;
}

export async function runTorture(options: {
  seconds: number;
  seed: number;
  keys?: number;
  writers?: number;
  /** The faults to inject, each once per round in a random order (default: all of them). */
  faults?: readonly Fault[];
}): Promise<TortureReport> {
  const { seed } = options;
  const faultMix = [...(options.faults ?? FAULTS)];
  // Seen at once (jest prints console.log only when the test ends): a hung run can be replayed too.
  process.stderr.write(`media torture: TORTURE_SEED=${seed} TORTURE_SECONDS=${options.seconds} faults=${faultMix.join(',')}\n`);
  const report: TortureReport = {
    seed,
    faultMix,
    schedule: [],
    ops: {},
    faults: {},
    reads: { ok: 0, notFound: 0, unavailable: 0 },
    keys: 0,
    versionsChecked: 0,
    objectsChecked: 0,
    violations: [],
  };
  // Every failure message names the seed that replays it.
  const violation = (v: string) => {
    if (report.violations.length < 200) report.violations.push(`[TORTURE_SEED=${seed}] ${v}`);
  };
  // One stream per writer and one for the chaos loop; the seed's own stream derives theirs.
  const seeds = seededRandom(seed);
  const stream = () => seededRandom(Math.floor(seeds() * 4294967296));
  const db = await createScratchDatabase('sav3_torture');
  const pgProxy = await startTcpProxy(5432);
  const dbUrl = new URL(db.url);
  dbUrl.port = String(pgProxy.port);
  const redis = await startOwnRedis();
  const primary = await startS3Server({ bucket: 'torture-primary' });
  const backup = await startS3Server({ bucket: 'torture-backup' });
  // Each S3 server is reached through a proxy that can refuse and cut every connection, as a
  // killed server would (a stopped server's port could be taken before it restarts).
  const s3Proxies = { primary: await startTcpProxy(primary.port), backup: await startTcpProxy(backup.port) };
  const viaProxy = (s3: S3ServerHandle, port: number): S3ServerHandle => ({ ...s3, endpoint: `http://127.0.0.1:${port}`, port });
  // The torture run has a Redis of its own: both instances use the default key prefix.
  const prefix = 'sav3:';
  const env: Record<string, string> = {
    DATABASE_URL: dbUrl.toString(),
    REDIS_URL: redis.url,
    ADMIN_TOKENS,
    ...mediaEnv('PRIMARY', viaProxy(primary, s3Proxies.primary.port)),
    ...mediaEnv('BACKUP', viaProxy(backup, s3Proxies.backup.port)),
    MEDIA_CONTINUOUS_BACKUP: 'true',
    MEDIA_GC_GRACE_SECONDS: String(GRACE_SECONDS),
    MEDIA_GC_INTERVAL_MS: '500',
    MEDIA_CACHE_TTL_SECONDS: '3',
    MEDIA_S3_TIMEOUT_MS: '2000',
    MEDIA_SYNC_INLINE_MAX: '100000',
    HEALTH_TIMEOUT_MS: '300',
    HEALTH_INTERVAL_MS: '500',
    SHUTDOWN_TIMEOUT_MS: '1000',
    LOG_LEVEL: 'warn',
  };
  const a: TestInstance = await startInstance({ ...env, INSTANCE_ID: 'torture-a' }, prefix);
  const b = await childInstance({ ...env, INSTANCE_ID: 'torture-b' });
  const urls = [a.url, b.url];
  const keys = Array.from({ length: options.keys ?? 6 }, (_, i) => `t/${i === 0 ? 'x'.repeat(250) : `k${i}`}`);
  const ops: Op[] = [];
  const count = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  const started = Date.now();
  const deadline = started + options.seconds * 1000;
  const pick = <T>(random: () => number, xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;

  const writer = async (random: () => number) => {
    while (Date.now() < deadline) {
      const key = pick(random, keys);
      const url = pick(random, urls);
      const r = random();
      if (r < 0.55) {
        const body = randomBody(random, 1 + Math.floor(random() * 48_000));
        const op: Op = { key, kind: 'put', sha: sha256Hex(body), start: Date.now(), end: 0, outcome: 'uncertain' };
        ops.push(op);
        try {
          const res = await fetch(`${url}/media/${key}`, {
            method: 'PUT',
            body,
            headers: { 'Content-Type': 'application/octet-stream' },
            signal: AbortSignal.timeout(15_000),
          });
          const json = (await res.json().catch(() => ({}))) as { sha256?: string; error?: { code?: string } };
          op.outcome = classify(res.status, json.error?.code);
          if (op.outcome === 'ack' && json.sha256 !== op.sha)
            violation(`PUT ${key} acknowledged sha ${json.sha256} for a body of sha ${op.sha}`);
        } catch (err) {
          op.outcome = networkOutcome(err);
        }
        op.end = Date.now();
        count(report.ops, `put:${op.outcome}`);
      } else if (r < 0.75) {
        const op: Op = { key, kind: 'delete', start: Date.now(), end: 0, outcome: 'uncertain' };
        ops.push(op);
        try {
          const res = await fetch(`${url}/media/${key}`, { method: 'DELETE', signal: AbortSignal.timeout(15_000) });
          const json = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
          op.outcome = classify(res.status, json.error?.code);
        } catch (err) {
          op.outcome = networkOutcome(err);
        }
        op.end = Date.now();
        count(report.ops, `delete:${op.outcome}`);
      } else {
        await checkRead(url, key, false);
      }
    }
  };

  /** A read serves one acknowledged (or possibly applied) PUT, whole, with its sha256 as ETag. */
  const checkRead = async (url: string, key: string, final: boolean): Promise<string | null | undefined> => {
    try {
      const res = await fetch(`${url}/media/${key}`, { signal: AbortSignal.timeout(15_000) });
      if (res.status === 404) {
        report.reads.notFound += 1;
        return null;
      }
      if (res.status !== 200) {
        report.reads.unavailable += 1;
        await res.arrayBuffer().catch(() => undefined);
        if (final) violation(`final GET ${key} via ${url} answered ${res.status}`);
        return undefined;
      }
      let body: Buffer;
      try {
        body = Buffer.from(await res.arrayBuffer());
      } catch {
        return undefined; // cut mid-stream: the client sees a short body, never a complete wrong one
      }
      report.reads.ok += 1;
      const digest = sha256Hex(body);
      const etag = res.headers.get('etag');
      if (etag !== `"${digest}"`) violation(`GET ${key} served a body of sha ${digest} under ETag ${etag}`);
      if (Number(res.headers.get('content-length')) !== body.length)
        violation(`GET ${key} served ${body.length} bytes under Content-Length ${res.headers.get('content-length')}`);
      const puts = ops.filter((o) => o.key === key && o.kind === 'put' && o.sha === digest);
      if (puts.length === 0) violation(`GET ${key} served content (sha ${digest}) no PUT sent`);
      else if (puts.every((o) => o.outcome === 'refused')) violation(`GET ${key} served a refused PUT (sha ${digest})`);
      return digest;
    } catch {
      report.reads.unavailable += 1;
      return undefined;
    }
  };

  const admin = (url: string, path: string, body: object) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${OPERATOR_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    })
      .then((r) => r.status)
      .catch(() => 0);

  let restarting: Promise<void> = Promise.resolve();
  const chaos = async (random: () => number) => {
    // Every kind of fault of the mix in each round, in a random order (Fisher-Yates).
    let round: Fault[] = [];
    while (Date.now() < deadline - 2000) {
      await sleep(500 + random() * 1200);
      if (Date.now() > deadline - 1600) break;
      if (round.length === 0) {
        round = [...faultMix];
        for (let i = round.length - 1; i > 0; i -= 1) {
          const j = Math.floor(random() * (i + 1));
          [round[i], round[j]] = [round[j]!, round[i]!];
        }
      }
      const fault = round.pop()!;
      count(report.faults, fault);
      // Every fault heals 1.5 s before the writers stop: a run whose last fault outlived it (the
      // primary down to the end: deletes still acknowledged, every PUT refused) ended with every
      // key deleted and nothing left to check.
      const down = Math.max(100, Math.min(500 + random() * 2500, deadline - 1500 - Date.now()));
      const side = random() < 0.5 ? 'backup' : 'primary';
      report.schedule.push(
        `${((Date.now() - started) / 1000).toFixed(1)}s ${fault}${fault === 'switch' || fault === 'sync' ? ` to ${side}` : ` ${Math.round(down)}ms`}`,
      );
      if (fault === 'primary' || fault === 'backup') {
        s3Proxies[fault].setMode('refuse');
        await sleep(down);
        s3Proxies[fault].setMode('pass');
      } else if (fault === 'redis') {
        await redis.stop();
        await sleep(down);
        await redis.start();
      } else if (fault === 'postgres') {
        pgProxy.setMode('refuse');
        await sleep(down);
        pgProxy.setMode('pass');
      } else if (fault === 'instance') {
        // The restart (a fresh process, several seconds under load) runs beside the next faults:
        // waiting for it let one slow start use up the run and leave kinds of fault never injected.
        await restarting;
        b.kill();
        restarting = sleep(down).then(() => b.start());
      } else if (fault === 'switch') {
        await admin(a.url, '/admin/media/switch', { to: side });
      } else {
        const to = side;
        await admin(a.url, '/admin/media/sync', { from: to === 'backup' ? 'primary' : 'backup', to });
      }
    }
  };

  try {
    const writers = Array.from({ length: options.writers ?? 4 }, stream);
    const chaosRandom = stream();
    await Promise.all([...writers.map(writer), chaos(chaosRandom)]);
    await restarting;

    // Heal, let background copies finish, and let the grace period pass so garbage is garbage.
    pgProxy.setMode('pass');
    s3Proxies.primary.setMode('pass');
    s3Proxies.backup.setMode('pass');
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const outboxDeadline = Date.now() + 30_000;
      for (;;) {
        const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM media_outbox');
        if (rows[0]!.n === 0) break;
        if (Date.now() > outboxDeadline) {
          violation(`the outbox still holds ${rows[0]!.n} rows 30 s after every fault healed`);
          break;
        }
        await sleep(250);
      }
      await sleep(GRACE_SECONDS * 1000 + 500);
      // The collector skips a backend its instance's probe last saw down: wait until instance A
      // has seen both come back (a probe can time out on a loaded machine), or say so.
      for (const [name, runner] of a.service.media.runners) {
        const probeDeadline = Date.now() + 15_000;
        while (!(await runner.run()).ok) {
          if (Date.now() > probeDeadline) {
            violation(`instance A's probe still finds the ${name} S3 server down 15 s after every fault healed`);
            break;
          }
          await sleep(200);
        }
      }
      await a.service.media.gc.collect();
      await a.service.media.gc.sweepOrphans();

      const stores: Record<string, ObjectStore> = {};
      for (const [name, s3] of [
        ['primary', primary],
        ['backup', backup],
      ] as const) {
        stores[name] = new MinioObjectStore({
          name,
          endpoint: s3.endpoint,
          accessKey: s3.accessKey,
          secretKey: s3.secretKey,
          bucket: s3.bucket,
          region: 'us-east-1',
        });
      }
      // 1. Every key: the final state is one a linearizable store could end in, and both instances serve it.
      const pointers = new Map(
        (
          await client.query<{ key: string; version: string; sha256: string; size: string }>(
            'SELECT key, version::text AS version, sha256, size FROM media_objects WHERE deleted_at IS NULL',
          )
        ).rows.map((r) => [r.key, r]),
      );
      for (const key of keys) {
        report.keys += 1;
        const mine = ops.filter((o) => o.key === key);
        const acked = mine.filter((o) => o.outcome === 'ack');
        const possibleLast = (o: Op) => !acked.some((x) => x !== o && x.start > (o.outcome === 'uncertain' ? Infinity : o.end));
        const ptr = pointers.get(key);
        if (ptr) {
          const candidates = mine.filter(
            (o) => o.kind === 'put' && o.sha === ptr.sha256.trim() && (o.outcome === 'ack' || o.outcome === 'uncertain'),
          );
          if (candidates.length === 0) violation(`${key} ends on sha ${ptr.sha256} which no acknowledged or pending PUT wrote`);
          else if (!candidates.some(possibleLast)) violation(`${key} ends on an acknowledged PUT that a later acknowledged write replaced`);
        } else {
          const everWritten = mine.some((o) => o.kind === 'put' && o.outcome === 'ack');
          const deletes = mine.filter((o) => o.kind === 'delete' && (o.outcome === 'ack' || o.outcome === 'uncertain'));
          if (everWritten && !deletes.some(possibleLast))
            violation(`${key} is absent although no DELETE came after its last acknowledged PUT`);
        }
        for (const url of [a.url, b.url]) {
          const served = await checkRead(url, key, true);
          if (served !== undefined && served !== (ptr ? ptr.sha256.trim() : null))
            violation(`final GET ${key} via ${url} served ${served} but the metadata says ${ptr?.sha256 ?? 'absent'}`);
        }
      }
      // 2. Every version row: a current version is complete, with its sha256, on every backend it names (both, after the backup drained).
      const versions = (
        await client.query<{ id: string; key: string; sha256: string; backends: string[]; current: boolean }>(
          `SELECT v.id::text AS id, v.key, v.sha256, v.backends, (o.version IS NOT NULL) AS current FROM media_versions v LEFT JOIN media_objects o ON o.version = v.id`,
        )
      ).rows;
      for (const v of versions) {
        report.versionsChecked += 1;
        if (!v.current) {
          violation(`version ${v.id} of ${v.key} was replaced more than the grace period ago and is not collected`);
          continue;
        }
        if (!['primary', 'backup'].every((b) => v.backends.includes(b)))
          violation(`current version ${v.id} of ${v.key} is recorded only on ${v.backends.join(',')} after the backup drained`);
        for (const backend of v.backends) {
          try {
            const hash = createHash('sha256');
            for await (const chunk of await stores[backend]!.get(`v/${v.id}`)) hash.update(chunk as Buffer);
            if (hash.digest('hex') !== v.sha256.trim()) violation(`version ${v.id} on ${backend} does not hash to its sha256`);
          } catch (err) {
            violation(`version ${v.id} of ${v.key} is missing on ${backend}: ${String(err)}`);
          }
        }
      }
      // 3. Every stored object: a referenced version; nothing under a user key; no orphan past the grace period.
      const known = new Set(versions.map((v) => v.id));
      for (const [backend, store] of Object.entries(stores)) {
        for await (const object of store.list('')) {
          report.objectsChecked += 1;
          if (object.key.startsWith('.sav3-canary/')) continue;
          const id = /^v\/([0-9a-f-]{36})$/.exec(object.key)?.[1];
          if (!id) violation(`${backend} holds ${object.key}, which is not a version name`);
          else if (!known.has(id)) violation(`${backend} holds orphaned version ${id} (no metadata, older than the grace period)`);
        }
        store.close();
      }
    } finally {
      await client.end();
    }
  } finally {
    b.kill();
    await a.stop().catch(() => undefined);
    await Promise.allSettled([
      b.close(),
      s3Proxies.primary.close(),
      s3Proxies.backup.close(),
      primary.destroy(),
      backup.destroy(),
      redis.stop(),
      pgProxy.close(),
    ]);
    await db.drop().catch(() => undefined);
  }
  return report;
}
