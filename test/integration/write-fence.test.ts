import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import request from 'supertest';
import { migrate } from '../../src/services/database/migrator.ts';
import { fenceNode, unfenceNode } from '../../src/services/database/node-fence.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { eventually, sleep } from '../../support/common.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startOwnRedis, type OwnRedis } from '../../support/redis-server.ts';
import { heldUpload } from '../support/held-upload.ts';
import { hasMediaRow } from '../support/media-rows.ts';
import { childInstance } from '../support/media-torture.ts';
import { ADMIN_TOKENS, mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const LEASE_MS = 4000;

/**
 * Issue 10 F1: an instance paused (SIGSTOP: a GC pause, CPU starvation, VM steal) while its upload
 * waits in the commit statement must not acknowledge it after read-only mode answered on another
 * instance. Its own barrier is timer-driven and cannot run while it is paused; the database write
 * fence, raised by the change before it answers, refuses the commit inside the database.
 */
describe('the database write fence against a paused instance', () => {
  let cluster: PgCluster;
  let s3: S3ServerHandle;
  let redis: OwnRedis;
  let a: TestInstance;
  let paused: Awaited<ReturnType<typeof childInstance>>;
  let locker: pg.Client | undefined;

  beforeAll(async () => {
    cluster = await startPgCluster();
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    s3 = await startS3Server({ bucket: 'fence' });
    redis = await startOwnRedis();
    const env: Record<string, string> = {
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: cluster.primary.url(),
      DATABASE_REPLICA_URL: cluster.replica.url(),
      REDIS_URL: redis.url,
      ADMIN_TOKENS,
      DR_STATE_LEASE_MS: String(LEASE_MS),
      HEALTH_TIMEOUT_MS: '500',
      HEALTH_INTERVAL_MS: '500',
      SHUTDOWN_TIMEOUT_MS: '1000',
      LOG_LEVEL: 'warn',
    };
    // Both on the default key prefix of the Redis of their own.
    a = await startInstance({ ...env, INSTANCE_ID: 'fence-a' }, 'sav3:');
    paused = await childInstance({
      ...env,
      INSTANCE_ID: 'fence-paused',
      DR_STATE_FILE: join(tmpdir(), `sav3-dr-state-${randomBytes(6).toString('hex')}.json`),
    });
  }, 90_000);
  afterAll(async () => {
    paused?.signal('SIGCONT');
    await locker?.end().catch(() => undefined);
    paused?.kill();
    await paused?.close();
    await a?.stop();
    await redis?.stop();
    await s3?.destroy();
    await cluster?.destroy();
  });

  /**
   * Sends `send` to the paused instance with its commit statement (`statement`) blocked behind a
   * table lock on the primary, pauses the instance past its lease (its timers cannot run), enables
   * read-only mode on the other instance, then lets the lock go and the instance run on.
   */
  async function stalledPastEnable(send: () => Promise<Response>, statement: string, lock = 'LOCK TABLE media_objects IN EXCLUSIVE MODE') {
    locker = new pg.Client({ connectionString: cluster.primary.url() });
    locker.on('error', () => undefined);
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query(lock);
    const pending = send().then(async (r) => ({
      status: r.status,
      body: (await r.json().catch(() => null)) as { error?: { code?: string } } | null,
    }));
    await eventually(
      async () =>
        (await locker!.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`, [`%${statement}%`]))
          .rowCount,
      (n) => n === 1,
      10_000,
      50,
    );
    paused.signal('SIGSTOP');
    await sleep(LEASE_MS + 2500);
    const on = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'fence test' });
    expect(on.status).toBe(200);
    expect(on.body.propagation.stale.map((i: { id: string }) => i.id)).toEqual(['fence-paused']);
    await locker.query('COMMIT');
    await locker.end();
    locker = undefined;
    await sleep(300);
    paused.signal('SIGCONT');
    return { answer: await pending, on };
  }

  it('a write stalled in its commit past a read-only enable is refused (503 write_fenced), and nothing is stored', async () => {
    // Both instances follow the same state and take writes.
    await eventually(
      async () => (await request(a.url).get('/admin/dr/state').set(auth)).body.instances as { id: string }[],
      (list) => list.some((i) => i.id === 'fence-paused'),
      15_000,
      100,
    );
    expect((await request(paused.url).put('/media/fence/warm').send(Buffer.from('warm'))).status).toBe(201);

    const { answer, on } = await stalledPastEnable(
      () => fetch(`${paused.url}/media/fence/paused`, { method: 'PUT', body: 'paused write' }),
      'FROM media_commit_write(', // the write's commit statement runs inside this function
    );
    expect(answer.status).toBe(503);
    expect(answer.body?.error?.code).toBe('write_fenced');
    expect(await hasMediaRow(cluster.primary.url(), 'fence/paused')).toBe(false);

    // The enable said it raised the fence on the primary (the replica is a standby).
    expect(on.body.writes).toMatchObject({
      databaseFence: 'raised',
      fenceEpoch: on.body.version,
      fenceNodes: { primary: { outcome: 'raised' }, replica: { outcome: 'standby' } },
    });

    // Writes admitted under the new state are not refused by the fence: off again, a retry succeeds.
    const off = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'fence test done' });
    expect(off.status).toBe(200);
    expect(off.body.writes.databaseFence).toBe('raised');
    const retry = await eventually(
      () => fetch(`${paused.url}/media/fence/paused`, { method: 'PUT', body: 'paused write' }).then((r) => r.status),
      (s) => s === 201,
      15_000,
      200,
    );
    expect(retry).toBe(201);
    expect((await request(a.url).put('/media/fence/after').send(Buffer.from('after'))).status).toBe(201);
    expect(await hasMediaRow(cluster.primary.url(), 'fence/paused')).toBe(true);
  }, 120_000);

  it('a delete stalled in its commit past a read-only enable is refused (503 write_fenced), and the object stays', async () => {
    expect((await request(paused.url).put('/media/fence/victim').send(Buffer.from('kept'))).status).toBe(201);
    const { answer } = await stalledPastEnable(
      () => fetch(`${paused.url}/media/fence/victim`, { method: 'DELETE' }),
      'UPDATE media_objects',
    );
    expect(answer.status).toBe(503);
    expect(answer.body?.error?.code).toBe('write_fenced');
    expect(await hasMediaRow(cluster.primary.url(), 'fence/victim')).toBe(true);
    const off = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'fence test done' });
    expect(off.status).toBe(200);
    expect(await (await fetch(`${a.url}/media/fence/victim`)).text()).toBe('kept');
  }, 120_000);

  // Found by an outside attack: an overwrite whose commit statement already holds the fence row
  // (FOR SHARE) and then waits behind a row lock kept the fence from being raised within its bound;
  // the enable answered "not_raised" and the paused instance acknowledged afterwards. The raise now
  // cancels such commits after a short wait: the fence is raised and the stalled write fails.
  it('an overwrite stalled while holding the fence row is cancelled by the raise: the enable says raised, the write fails, the old version stays', async () => {
    expect((await request(paused.url).put('/media/fence/row').send(Buffer.from('first'))).status).toBe(201);
    const { answer, on } = await stalledPastEnable(
      () => fetch(`${paused.url}/media/fence/row`, { method: 'PUT', body: 'second' }),
      'FROM media_commit_write(', // the write's commit statement runs inside this function
      "SELECT 1 FROM media_objects WHERE key = 'fence/row' FOR UPDATE",
    );
    expect(on.body.writes).toMatchObject({ databaseFence: 'raised', fenceNodes: { primary: { outcome: 'raised' } } });
    expect(answer.status).toBe(503);
    const off = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'fence test done' });
    expect(off.status).toBe(200);
    expect(await (await fetch(`${a.url}/media/fence/row`)).text()).toBe('first');
  }, 120_000);

  // With the primary down at the enable, the fence could not be raised there (the answer says
  // not_raised) and was never raised later: only the paused instance's own lease check stood between
  // a write admitted before the enable and the returning primary (that check refuses this write
  // even without the retry; the fence is the check that holds when a commit is already under way).
  // The raise is now tried again until the node answers.
  it('a fence raise that failed on a dead primary is raised once it returns: a write stalled past the enable is refused there', async () => {
    await eventually(
      async () => (await request(a.url).get('/admin/dr/state').set(auth)).body.instances as { id: string; appliedVersion: number }[],
      (list) => list.some((i) => i.id === 'fence-paused'),
      15_000,
      100,
    );
    const held = await heldUpload(paused.url, 'fence/held-over-outage');
    paused.signal('SIGSTOP');
    let resumed = false;
    try {
      await cluster.primary.stop('fast');
      await sleep(LEASE_MS + 2500);
      const on = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'primary down' });
      expect(on.status).toBe(200);
      expect(on.body.writes).toMatchObject({ databaseFence: 'not_raised', fenceNodes: { primary: { outcome: 'failed' } } });
      await cluster.primary.start();
      const epoch = async () => {
        const c = new pg.Client({ connectionString: cluster.primary.url() });
        await c.connect();
        try {
          return Number((await c.query(`SELECT max(epoch)::text AS e FROM dr_write_fence`)).rows[0]?.e ?? 0);
        } finally {
          await c.end();
        }
      };
      expect(await eventually(epoch, (e) => e >= on.body.version, 15_000, 200)).toBeGreaterThanOrEqual(on.body.version);
      paused.signal('SIGCONT');
      resumed = true;
      const answer = await held.finish();
      expect(answer.status).toBe(503);
      expect(await hasMediaRow(cluster.primary.url(), 'fence/held-over-outage')).toBe(false);
    } finally {
      if (!resumed) paused.signal('SIGCONT');
    }
    const off = await eventually(
      () => request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'primary back' }),
      (r) => r.status === 200,
      15_000,
      300,
    );
    expect(off.status).toBe(200);
  }, 120_000);

  // Issue 10 F3: the primary fenced (e.g. by a promote whose handler died) and the replica a standby.
  it('with no node taking writes, a lift of read-only mode is refused (412 no_writable_node) and /health says degraded', async () => {
    expect((await request(a.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'no writable node' })).status).toBe(200);
    await fenceNode(cluster.primary.url(), 5000);
    try {
      const off = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'try to lift' });
      expect(off.status).toBe(412);
      expect(off.body.error.code).toBe('no_writable_node');
      expect((await request(a.url).get('/admin/read-only').set(auth)).body.enabled).toBe(true);
      const health = await eventually(
        async () => (await request(a.url).get('/health').set(auth)).body as { status: string; checks?: unknown; components?: unknown },
        (b) => b.status === 'degraded',
        5000,
        200,
      );
      expect(JSON.stringify(health)).toContain('no_writable_node');
    } finally {
      await unfenceNode(cluster.primary.url(), 5000);
    }
    // Writable again: the lift goes through.
    const off = await eventually(
      () => request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'primary back' }),
      (r) => r.status === 200,
      5000,
      200,
    );
    expect(off.status).toBe(200);
  }, 60_000);
});
