// A planned database switchover with uploads in flight, as the runbook runs it: read-only on (the
// write barrier), promote (the replica catches up first, the old primary is fenced), switch, read-only
// off. Shared by `npm run drill:database` and `npm run bench:failover`; measures each step and the
// write unavailability, and proves nothing acknowledged is lost and nothing landed on the old primary.
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig } from '../src/config/config.ts';
import { migrate } from '../src/services/database/migrator.ts';
import { createLogger } from '../src/logger.ts';
import { createService, type Service } from '../src/service.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import { startPgCluster, type PgNode } from './pg-cluster.ts';
import { mediaEnv, startS3Server } from './s3-server.ts';
import { sha256Hex } from './common.ts';

export interface SwitchoverResult {
  concurrency: number;
  enableMs: number;
  writesAtEnable: { inFlight: number; waitedFor: number; failing: number; drained: boolean };
  promoteMs: number;
  switchMs: number;
  disableMs: number;
  /** From the read-only request to the first upload acknowledged afterwards. */
  unavailableMs: number;
  /** From the last upload acknowledged before the read-only request to the first one after read-only mode was lifted. */
  ackGapMs: number;
  acked: number;
  missingOnNewPrimary: number;
  ackedOnOldPrimaryAfterEnable: number;
  oldPrimaryFenced: boolean;
  /** Uploads refused, by error code (read_only while the mode is on, write_fenced at the barrier). */
  refused: Record<string, number>;
  /**
   * Where each step's time went: the wait for every instance to apply (propagation.waitedMs), and
   * the promotion's own timings (checks, catch-up + pg_promote + fencing).
   */
  breakdown: { enableWaitMs: number; promoteWaitMs: number; switchWaitMs: number; disableWaitMs: number; promote: unknown };
}

const waited = (answer: Record<string, unknown>): number => (answer.propagation as { waitedMs?: number } | undefined)?.waitedMs ?? -1;

async function keysOn(node: PgNode): Promise<Map<string, string>> {
  const client = new pg.Client({ connectionString: node.url(), connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ key: string; sha256: string }>(
      "SELECT key, sha256 FROM media_objects WHERE key LIKE 'switchover/%'",
    );
    return new Map(rows.map((r) => [r.key, r.sha256]));
  } finally {
    await client.end();
  }
}

async function setting(node: PgNode, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: node.url(), connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<{ v: string }>('SELECT current_setting($1) AS v', [name])).rows[0]!.v;
  } finally {
    await client.end();
  }
}

export async function plannedSwitchover(options: {
  concurrency: number;
  uploadBytes: number;
  redisUrl?: string;
}): Promise<SwitchoverResult> {
  const cluster = await startPgCluster({ synchronous: true });
  const s3 = await startS3Server({ bucket: 'switchover-media' });
  const token = randomBytes(24).toString('base64url');
  const prefix = `switchover:${process.pid}:${Date.now()}:`;
  const services: Service[] = [];
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    const bases: string[] = [];
    for (const id of ['so-a', 'so-b']) {
      const service = await createService(
        loadConfig({
          DATABASE_URL: cluster.primary.url(),
          DATABASE_REPLICA_URL: cluster.replica.url(),
          REDIS_URL: options.redisUrl ?? process.env.REDIS_URL,
          ...mediaEnv('PRIMARY', s3),
          ADMIN_TOKENS: `drill:operator:${token}`,
          PORT: '0',
          HOST: '127.0.0.1',
          // Generous on a loaded machine: a probe timing out would refuse the promotion.
          HEALTH_TIMEOUT_MS: '2000',
          HEALTH_INTERVAL_MS: '500',
          INSTANCE_ID: id,
          DR_STATE_FILE: join(tmpdir(), `sav3-switchover-${prefix.replace(/:/g, '-')}${id}.json`),
        }),
        createLogger('silent'),
        { redisKeyPrefix: prefix },
      );
      services.push(service);
      bases.push(`http://127.0.0.1:${(await service.listen()).port}`);
    }
    const admin = async (method: string, path: string, body: object) => {
      const res = await fetch(`${bases[0]}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      const json = (await res.json()) as Record<string, unknown>;
      if (res.status !== 200) throw new Error(`${method} ${path} answered ${res.status}: ${JSON.stringify(json)}`);
      return json;
    };

    const acks: { key: string; sha256: string; at: number }[] = [];
    const refused = new Map<string, number>();
    let running = true;
    let n = 0;
    const loops = Array.from({ length: options.concurrency }, async (_, i) => {
      while (running) {
        const key = `switchover/${(n += 1)}`;
        const body = randomBytes(options.uploadBytes);
        const res = await fetch(`${bases[i % 2]}/media/${key}`, { method: 'PUT', body }).catch(() => undefined);
        if (res?.status === 201) acks.push({ key, sha256: sha256Hex(body), at: performance.now() });
        else if (res) {
          const code = ((await res.json().catch(() => ({}))) as { error?: { code?: string } }).error?.code ?? String(res.status);
          refused.set(code, (refused.get(code) ?? 0) + 1);
        }
        if (res?.status !== 201) await new Promise((r) => setTimeout(r, 5));
      }
    });
    await new Promise((r) => setTimeout(r, 1000));

    const t0 = performance.now();
    const enable = await admin('PUT', '/admin/read-only', { enabled: true, reason: 'planned switchover' });
    const t1 = performance.now();
    const promoted = await admin('POST', '/admin/database/promote', { confirm: 'promote-replica', maxLagSeconds: 3600 });
    const t2 = performance.now();
    const switched = await admin('POST', '/admin/database/switch', { to: 'replica' });
    const t3 = performance.now();
    const disabled = await admin('PUT', '/admin/read-only', { enabled: false, reason: 'switchover done' });
    const t4 = performance.now();
    const deadline = t4 + 10_000;
    while (!acks.some((a) => a.at > t4) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    const firstAfter = acks.find((a) => a.at > t4)?.at ?? NaN;
    const lastBefore = acks.filter((a) => a.at < t0).at(-1)?.at ?? NaN;
    await new Promise((r) => setTimeout(r, 300));
    running = false;
    await Promise.all(loops);

    const [onNew, onOld] = await Promise.all([keysOn(cluster.replica), keysOn(cluster.primary)]);
    return {
      concurrency: options.concurrency,
      enableMs: Math.round(t1 - t0),
      writesAtEnable: enable.writes as SwitchoverResult['writesAtEnable'],
      promoteMs: Math.round(t2 - t1),
      switchMs: Math.round(t3 - t2),
      disableMs: Math.round(t4 - t3),
      unavailableMs: Math.round(firstAfter - t0),
      ackGapMs: Math.round(firstAfter - lastBefore),
      acked: acks.length,
      missingOnNewPrimary: acks.filter((a) => onNew.get(a.key) !== a.sha256).length,
      ackedOnOldPrimaryAfterEnable: acks.filter((a) => a.at > t1 && onOld.has(a.key)).length,
      oldPrimaryFenced: (await setting(cluster.primary, 'default_transaction_read_only')) === 'on',
      refused: Object.fromEntries(refused),
      breakdown: {
        enableWaitMs: waited(enable),
        promoteWaitMs: waited(promoted),
        switchWaitMs: waited(switched),
        disableWaitMs: waited(disabled),
        promote: promoted.timings ?? null,
      },
    };
  } finally {
    for (const service of services) await service.stop().catch(() => undefined);
    await s3.destroy();
    await cluster.destroy();
  }
}
