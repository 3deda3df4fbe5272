// The DR-state part of `npm run drill:database`, on a cluster, an instance and a Redis of its own:
// a read-only TTL that must not expire onto a standby, a restart while Redis is down (the state
// file), a state that does not match the nodes (refused, then reset by the runbook script), the
// lease (an instance cut off from Redis stops acknowledging writes), a TTL that falls due while
// Redis is down (kept on until the expiry is recorded), and Redis coming back empty while only an
// instance with an older copy is up (it refuses writes until the newest copy returns, which wins).
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config/config.ts';
import { migrate } from '../src/services/database/migrator.ts';
import { createLogger } from '../src/logger.ts';
import { createService, type Service } from '../src/service.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import { sleep } from './common.ts';
import { startOwnRedis } from './redis-server.ts';
import { runbookScript } from './drill.ts';
import { startPgCluster } from './pg-cluster.ts';
import { mediaEnv, startS3Server } from './s3-server.ts';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

const LEASE_MS = 3000;

export async function stateSafetyDrill(): Promise<Check[]> {
  const cluster = await startPgCluster();
  const s3 = await startS3Server({ bucket: 'state-drill' });
  const redis = await startOwnRedis();
  const token = randomBytes(24).toString('base64url');
  const prefix = `state-drill:${Date.now()}:`;
  const file = join(tmpdir(), `sav3-state-drill-${process.pid}-${Date.now()}.json`);
  const checks: Check[] = [];
  let service: Service | undefined;
  let other: Service | undefined;
  const launch = async (id: string, stateFile: string) => {
    const launched = await createService(
      loadConfig({
        DATABASE_URL: cluster.primary.url(),
        DATABASE_REPLICA_URL: cluster.replica.url(),
        REDIS_URL: redis.url,
        ...mediaEnv('PRIMARY', s3),
        ADMIN_TOKENS: `drill:operator:${token}`,
        PORT: '0',
        HOST: '127.0.0.1',
        HEALTH_TIMEOUT_MS: '2000',
        HEALTH_INTERVAL_MS: '300',
        INSTANCE_ID: id,
        DR_STATE_FILE: stateFile,
        DR_STATE_LEASE_MS: String(LEASE_MS),
      }),
      createLogger('silent'),
      { redisKeyPrefix: prefix },
    );
    return { launched, base: `http://127.0.0.1:${(await launched.listen()).port}` };
  };
  const start = async () => {
    const { launched, base } = await launch('state-drill', file);
    service = launched;
    return base;
  };
  const json = async (res: Response) => (await res.json().catch(() => ({}))) as Record<string, any>;
  try {
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    let base = await start();
    const script = (name: string, args: string[]) => runbookScript(base, token, name, args);
    const admin = (method: string, path: string, body?: object) =>
      fetch(`${base}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: body ? JSON.stringify(body) : undefined,
      });
    const put = async (key: string) => {
      const res = await fetch(`${base}/media/${key}`, { method: 'PUT', body: key });
      return { status: res.status, code: (await json(res)).error?.code as string | undefined };
    };

    // 1. A TTL given before a switch to the unpromoted replica does not reopen writes onto it.
    await script('enable-readonly-mode.sh', ['--reason', 'drill: ttl', '--ttl', '2']);
    await script('switch-database-connection.sh', ['--to', 'replica']);
    await sleep(3500);
    const kept = await json(await admin('GET', '/admin/dr/state'));
    checks.push({
      name: 'ttl_kept_on_over_standby',
      ok: kept.readOnly?.active === true && String(kept.readOnly?.reason).startsWith('kept on'),
      detail: String(kept.readOnly?.reason),
    });
    await script('switch-database-connection.sh', ['--to', 'primary']);

    // 2. Restart while Redis is down: the instance follows its state file (read-only still on).
    await redis.stop();
    await service!.stop();
    base = await start();
    const whileDown = await put('state-drill/while-redis-down');
    checks.push({
      name: 'restart_with_redis_down_follows_state_file',
      ok: whileDown.status === 503 && whileDown.code === 'read_only',
      detail: `write answered ${whileDown.status} ${whileDown.code}`,
    });
    await redis.start();
    let restored = false;
    for (let i = 0; i < 100 && !restored; i += 1) {
      const probe = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
      probe.on('error', () => undefined);
      restored = await probe.get(`${prefix}dr:state`).then(
        (v) => v !== null,
        () => false,
      );
      probe.disconnect();
      if (!restored) await sleep(100);
    }
    checks.push({
      name: 'empty_redis_gets_the_state_back',
      ok: restored,
      detail: restored ? 'the state is in Redis again' : 'not restored within 10 s',
    });
    for (let i = 0; i < 50 && (await admin('PUT', '/admin/read-only', { enabled: false, reason: 'drill' })).status !== 200; i += 1)
      await sleep(200);

    // 3. A state recording another cluster's nodes: writes refused until reset-dr-state.sh.
    const client = new Redis(redis.url);
    const stored = JSON.parse((await client.get(`${prefix}dr:state`)) ?? 'null');
    stored.version += 1;
    stored.database.nodes = { primary: { systemId: '1', timeline: 1, recordedAt: new Date().toISOString() } };
    await client.set(`${prefix}dr:state`, JSON.stringify(stored));
    await client.publish(`${prefix}dr:changed`, String(stored.version));
    client.disconnect();
    let mismatch = await put('state-drill/mismatch');
    for (let i = 0; i < 50 && mismatch.code !== 'state_mismatch'; i += 1) {
      await sleep(100);
      mismatch = await put('state-drill/mismatch');
    }
    checks.push({
      name: 'mismatched_state_refuses_writes',
      ok: mismatch.code === 'state_mismatch',
      detail: `write answered ${mismatch.status} ${mismatch.code}`,
    });
    await script('reset-dr-state.sh', ['--reason', 'drill: state of another cluster', '--yes']);
    const after = await put('state-drill/after-reset');
    checks.push({ name: 'reset_reopens_writes', ok: after.status === 201, detail: `write answered ${after.status}` });

    // 4. The lease: cut off from Redis for longer than DR_STATE_LEASE_MS, the instance cannot know
    //    whether read-only mode or a switch was decided meanwhile, so it stops acknowledging writes.
    await redis.stop();
    await sleep(LEASE_MS + 1500);
    const stale = await put('state-drill/after-lease');
    checks.push({
      name: 'lease_lost_refuses_writes',
      ok: stale.status === 503 && stale.code === 'state_stale',
      detail: `write answered ${stale.status} ${stale.code}`,
    });
    await redis.start();
    let back = await put('state-drill/lease-back');
    for (let i = 0; i < 100 && back.status !== 201; i += 1) {
      await sleep(100);
      back = await put('state-drill/lease-back');
    }
    checks.push({
      name: 'lease_regained_reopens_writes',
      ok: back.status === 201,
      detail: `write answered ${back.status} ${back.code ?? ''}`.trim(),
    });

    // 5. A TTL that falls due while Redis is down: the expiry cannot be recorded, so the mode stays
    //    on and says why; once Redis is back the expiry is recorded and writes reopen.
    await script('enable-readonly-mode.sh', ['--reason', 'drill: ttl while redis down', '--ttl', '2']);
    await redis.stop();
    await sleep(3500);
    const duringOutage = await put('state-drill/ttl-redis-down');
    const refused = await json(await admin('GET', '/admin/read-only'));
    checks.push({
      name: 'ttl_due_while_redis_down_kept_on',
      ok: duringOutage.status === 503 && duringOutage.code === 'read_only' && refused.ttlExpiryRefused?.kind === 'unrecorded',
      detail: `write answered ${duringOutage.status} ${duringOutage.code}; ttlExpiryRefused ${JSON.stringify(refused.ttlExpiryRefused ?? null)}`,
    });
    await redis.start();
    let reopened = await put('state-drill/ttl-recorded');
    for (let i = 0; i < 100 && reopened.status !== 201; i += 1) {
      await sleep(100);
      reopened = await put('state-drill/ttl-recorded');
    }
    checks.push({
      name: 'ttl_recorded_when_redis_returns',
      ok: reopened.status === 201,
      detail: `write answered ${reopened.status} ${reopened.code ?? ''}`.trim(),
    });

    // 6. Redis comes back empty while only an instance with an older copy is up: a second instance
    //    stops (its copy: read-only off), read-only goes on, the first stops too, Redis restarts
    //    empty, the second returns first. It must not put its older copy back (that would lift
    //    read-only mode): it refuses writes (state_unknown) until the first returns with the newest
    //    copy, which wins.
    const fileB = `${file}.b`;
    const second = await launch('state-drill-b', fileB);
    other = second.launched;
    const putOn = async (at: string, key: string) => {
      const res = await fetch(`${at}/media/${key}`, { method: 'PUT', body: key });
      return { status: res.status, code: (await json(res)).error?.code as string | undefined };
    };
    await sleep(1500); // both see each other live (their peers)
    await other.stop();
    await script('enable-readonly-mode.sh', ['--reason', 'drill: state loss']);
    await service!.stop();
    await redis.stop();
    await redis.start();
    const returned = await launch('state-drill-b', fileB);
    other = returned.launched;
    let olderCopy = await putOn(returned.base, 'state-drill/older-copy');
    for (let i = 0; i < 30 && olderCopy.code !== 'state_unknown' && olderCopy.status !== 201; i += 1) {
      await sleep(100);
      olderCopy = await putOn(returned.base, 'state-drill/older-copy');
    }
    await sleep(2500);
    const stillRefused = await putOn(returned.base, 'state-drill/older-copy-later');
    checks.push({
      name: 'older_copy_not_put_back_into_empty_redis',
      ok: olderCopy.code === 'state_unknown' && stillRefused.code === 'state_unknown',
      detail: `writes answered ${olderCopy.status} ${olderCopy.code ?? ''}, 2.5 s later ${stillRefused.status} ${stillRefused.code ?? ''}`,
    });
    base = await start();
    let newest = await putOn(returned.base, 'state-drill/newest-back');
    for (let i = 0; i < 100 && newest.code !== 'read_only'; i += 1) {
      await sleep(100);
      newest = await putOn(returned.base, 'state-drill/newest-back');
    }
    checks.push({
      name: 'newest_copy_wins_when_its_instance_returns',
      ok: newest.status === 503 && newest.code === 'read_only',
      detail: `write answered ${newest.status} ${newest.code ?? ''}`,
    });
    return checks;
  } finally {
    await other?.stop().catch(() => undefined);
    await service?.stop().catch(() => undefined);
    await redis.stop();
    await s3.destroy();
    await cluster.destroy();
  }
}
