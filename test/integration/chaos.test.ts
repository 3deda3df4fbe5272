import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster, type PgNode } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startOwnRedis, type OwnRedis } from '../../support/redis-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { seededRandom, sha256Hex, sleep } from '../../support/common.ts';

const LEASE_MS = 3000;
/** Allowance past the lease for an answer already under way (skew allowance plus request latency). */
const LEASE_ALLOWANCE_MS = 1500;

interface Ack {
  key: string;
  sha256: string;
  ackAt: number;
}

async function keysOn(node: PgNode): Promise<Map<string, string>> {
  const client = new pg.Client({ connectionString: node.url(), connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ key: string; sha256: string }>("SELECT key, sha256 FROM media_objects WHERE key LIKE 'chaos/%'");
    return new Map(rows.map((r) => [r.key, r.sha256]));
  } finally {
    await client.end();
  }
}

/**
 * Invariants under chaos (random read-only on/off, promote, switch, Redis restart, instance restart,
 * primary kill and return, with steady writes on two instances):
 *  1. every acknowledged write is on the current primary, with its sha256, and served by the API;
 *  2. no write acknowledged after the promotion began is on the old primary (it landed on a node that
 *     was not primary when acknowledged);
 *  3. at the end exactly one node takes writes;
 *  4. the lease: no write is acknowledged later than the lease (plus an allowance) into a Redis outage.
 * Read-only TTLs expire at random points, also with Redis down or the unpromoted replica active.
 * The primary streams synchronously to the replica, so a killed primary loses no acknowledged commit.
 * CHAOS_SEED replays a run; CHAOS_DURATION_MS lengthens it (`npm run test:chaos`).
 */
describe('chaos: two instances, steady writes, random DR operations and faults', () => {
  let cluster: PgCluster;
  let s3: S3ServerHandle;
  let redis: OwnRedis;
  const instances: (TestInstance | undefined)[] = [];

  afterAll(async () => {
    for (const api of instances) await api?.stop().catch(() => undefined);
    await redis?.stop();
    await s3?.destroy();
    await cluster?.destroy();
  });

  it(
    'keeps every acknowledged write on the current primary and none on a node that was not primary',
    async () => {
      const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 1e6));
      const durationMs = Number(process.env.CHAOS_DURATION_MS ?? 35_000);
      const rng = seededRandom(seed);
      const log: string[] = [`seed ${seed}`];
      const note = (line: string) => log.push(`${Math.round(performance.now())} ${line}`);

      cluster = await startPgCluster({ synchronous: true });
      await migrate(cluster.primary.url(), MIGRATIONS_DIR);
      s3 = await startS3Server({ bucket: 'chaos-media' });
      redis = await startOwnRedis();
      const prefix = uniquePrefix();
      const env = {
        ...mediaEnv('PRIMARY', s3),
        DATABASE_URL: cluster.primary.url(),
        DATABASE_REPLICA_URL: cluster.replica.url(),
        REDIS_URL: redis.url,
        HEALTH_TIMEOUT_MS: '500',
        HEALTH_INTERVAL_MS: '250',
        LOG_LEVEL: 'warn',
        DR_STATE_LEASE_MS: String(LEASE_MS),
      };
      const stateFiles = [0, 1].map((i) => join(tmpdir(), `sav3-chaos-${randomBytes(4).toString('hex')}-${i}.json`));
      const start = async (slot: number) => {
        instances[slot] = await startInstance({ ...env, INSTANCE_ID: `chaos-${slot}`, DR_STATE_FILE: stateFiles[slot] }, prefix);
      };
      await start(0);
      await start(1);

      const admin = async (method: string, path: string, body: object) => {
        const api = instances[Math.floor(rng() * 2)];
        if (!api) return { status: 0, body: {} as Record<string, unknown> };
        try {
          const res = await fetch(`${api.url}${path}`, {
            method,
            headers: { Authorization: `Bearer ${OPERATOR_TOKEN}`, 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(20_000),
          });
          return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
        } catch {
          return { status: 0, body: {} as Record<string, unknown> };
        }
      };

      // Steady writes: unique keys, so the checker knows exactly which version each key must hold.
      const acks: Ack[] = [];
      const refusals = new Map<string, number>();
      let writing = true;
      const writers = [0, 1].map(async (w) => {
        let n = 0;
        while (writing) {
          const api = instances[w];
          n += 1;
          const key = `chaos/w${w}-${n}`;
          const body = randomBytes(256 + Math.floor(rng() * 2048));
          if (api) {
            try {
              const res = await fetch(`${api.url}/media/${key}`, { method: 'PUT', body, signal: AbortSignal.timeout(15_000) });
              if (res.status === 201) acks.push({ key, sha256: sha256Hex(body), ackAt: performance.now() });
              else {
                const code = ((await res.json().catch(() => ({}))) as { error?: { code?: string } }).error?.code ?? String(res.status);
                refusals.set(code, (refusals.get(code) ?? 0) + 1);
              }
            } catch {
              refusals.set('connection', (refusals.get('connection') ?? 0) + 1);
            }
          }
          await sleep(15 + rng() * 30);
        }
      });

      const outages: { from: number; to: number }[] = [];
      let promoted = false;
      let promoteStartedAt = Infinity;
      const down = new Set<PgNode>();
      const currentPrimary = () => (promoted ? cluster.replica : cluster.primary);
      const promote = async () => {
        const startedAt = performance.now();
        const res = await admin('POST', '/admin/database/promote', { confirm: 'promote-replica', maxLagSeconds: 3600 });
        if (res.status === 200 && res.body.promoted === true) {
          promoted = true;
          promoteStartedAt = Math.min(promoteStartedAt, startedAt);
        }
        note(
          `promote → ${res.status} ${res.body.promoted === true ? 'promoted' : ((res.body.error as { message?: string })?.message ?? '').slice(0, 80)}`,
        );
      };

      const actions: Record<string, () => Promise<void>> = {
        async readOnlyOn() {
          const res = await admin('PUT', '/admin/read-only', { enabled: true, reason: 'chaos' });
          note(`read-only on → ${res.status} ${JSON.stringify(res.body.writes ?? null)}`);
        },
        async readOnlyWithTtl() {
          const ttlSeconds = 1 + Math.floor(rng() * 3);
          note(
            `read-only on, ttl ${ttlSeconds} s → ${(await admin('PUT', '/admin/read-only', { enabled: true, reason: 'chaos ttl', ttlSeconds })).status}`,
          );
        },
        async redisOutage() {
          // Longer than the lease: every instance must stop acknowledging writes.
          const stoppedAt = performance.now();
          await redis.stop();
          note('redis stopped (long outage)');
          await sleep(LEASE_MS + 500 + rng() * 1500);
          outages.push({ from: stoppedAt, to: performance.now() });
          await redis.start();
          note('redis started (empty)');
        },
        async readOnlyOff() {
          note(`read-only off → ${(await admin('PUT', '/admin/read-only', { enabled: false, reason: 'chaos' })).status}`);
        },
        promote,
        async switchTarget() {
          const to = promoted || rng() < 0.6 ? 'replica' : 'primary';
          note(`switch to ${to} → ${(await admin('POST', '/admin/database/switch', { to })).status}`);
        },
        async redisRestart() {
          const stoppedAt = performance.now();
          await redis.stop();
          note('redis stopped');
          await sleep(300 + rng() * 1200);
          outages.push({ from: stoppedAt, to: performance.now() });
          await redis.start();
          note('redis started (empty)');
        },
        async instanceRestart() {
          const slot = Math.floor(rng() * 2);
          const api = instances[slot];
          instances[slot] = undefined;
          await api?.stop();
          await start(slot);
          note(`instance ${slot} restarted`);
        },
        async primaryKill() {
          const node = currentPrimary();
          if (down.has(node)) return;
          await node.stop('immediate');
          down.add(node);
          note(`${node === cluster.primary ? 'primary' : 'replica'} node killed`);
        },
        async primaryReturn() {
          for (const node of down) {
            await node.start();
            down.delete(node);
            note(`${node === cluster.primary ? 'primary' : 'replica'} node back`);
          }
        },
      };
      const names = Object.keys(actions);
      const startedAt = performance.now();
      const endAt = startedAt + durationMs;
      while (performance.now() < endAt) {
        await sleep(400 + rng() * 900);
        let name = names[Math.floor(rng() * names.length)]!;
        // The first third runs without promotions, so plenty of writes are acknowledged by the old primary.
        if (name === 'promote' && performance.now() - startedAt < durationMs / 3) name = 'readOnlyOff';
        await actions[name]!();
      }

      // Settle as the runbook would: every node and Redis up, read-only on, promote if nothing did,
      // switch to the promoted node, read-only off. Writes keep running throughout.
      await actions.primaryReturn!();
      const settle = async (what: string, fn: () => Promise<{ status: number }>) => {
        for (let i = 0; i < 40; i += 1) {
          const res = await fn();
          if (res.status === 200) return;
          await sleep(250);
        }
        throw new Error(`settling failed at ${what}\n${log.join('\n')}`);
      };
      await settle('read-only on', () => admin('PUT', '/admin/read-only', { enabled: true, reason: 'settle' }));
      if (!promoted) {
        await settle('promote', async () => {
          await promote();
          return { status: promoted ? 200 : 0 };
        });
      }
      await settle('switch', () => admin('POST', '/admin/database/switch', { to: 'replica' }));
      await settle('read-only off', () => admin('PUT', '/admin/read-only', { enabled: false, reason: 'settle' }));
      const acksBefore = acks.length;
      const deadline = performance.now() + 10_000;
      while (acks.length < acksBefore + 10 && performance.now() < deadline) await sleep(50);
      writing = false;
      await Promise.all(writers);

      // The checker walks the final state.
      const onPrimary = await keysOn(cluster.replica);
      const onOld = await keysOn(cluster.primary);
      const missing = acks.filter((a) => onPrimary.get(a.key) !== a.sha256).map((a) => a.key);
      const strays = acks.filter((a) => a.ackAt > promoteStartedAt && onOld.has(a.key)).map((a) => a.key);
      // The lease: within an outage, nothing acknowledged later than lease + allowance after it began.
      const pastLease = acks
        .filter((a) => outages.some((o) => a.ackAt > o.from + LEASE_MS + LEASE_ALLOWANCE_MS && a.ackAt < o.to))
        .map((a) => a.key);
      const unreadable: string[] = [];
      for (const ack of acks) {
        const res = await fetch(`${instances[0]!.url}/media/${ack.key}`, { method: 'HEAD' });
        if (res.status !== 200 || res.headers.get('etag') !== `"${ack.sha256}"`) unreadable.push(`${ack.key}:${res.status}`);
      }
      const metrics = await (await fetch(`${instances[0]!.url}/metrics`)).text();
      const summary = {
        seed,
        acks: acks.length,
        acksAfterPromotion: acks.filter((a) => a.ackAt > promoteStartedAt).length,
        refusals: Object.fromEntries(refusals),
        actions: log.length - 1,
      };
      process.stdout.write(`chaos: ${JSON.stringify(summary)}\n`);
      const report = `${JSON.stringify(summary)}\n${log.join('\n')}`;

      expect({ missing, report: missing.length ? report : '' }).toEqual({ missing: [], report: '' });
      expect({ strays, report: strays.length ? report : '' }).toEqual({ strays: [], report: '' });
      expect({ pastLease, report: pastLease.length ? report : '' }).toEqual({ pastLease: [], report: '' });
      expect({ unreadable, report: unreadable.length ? report : '' }).toEqual({ unreadable: [], report: '' });
      // Liveness, loosely: writes were acknowledged both before and after the promotion.
      expect(acks.length - summary.acksAfterPromotion).toBeGreaterThan(0);
      expect(summary.acksAfterPromotion).toBeGreaterThan(0);
      expect(metrics).toMatch(/^sav3_database_writable_nodes 1$/m);
    },
    Number(process.env.CHAOS_DURATION_MS ?? 35_000) + 150_000,
  );
});
