import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import request from 'supertest';
import type { PgCluster } from '../../support/pg-cluster.ts';
import type { OwnRedis } from '../../support/redis-server.ts';
import { eventually, sleep } from '../../support/common.ts';
import { heldUpload } from '../support/held-upload.ts';
import type { TcpProxy } from '../support/tcp-proxy.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startPartitionWorld, type PartitionWorld } from '../support/world.ts';
import { sql } from '../support/dr-scripts.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const LEASE_MS = 3000;

async function rowOn(url: string, key: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<{ sha256: string }>('SELECT sha256 FROM media_objects WHERE key = $1', [key])).rows[0]?.sha256 ?? null;
  } finally {
    await client.end();
  }
}

/**
 * The DR state lost from Redis (a restart without persistence), a media switch with uploads in
 * flight, and the reset, against a real primary + streaming replica. Instance `a` talks to Redis
 * directly, `b` through a proxy (to cut it off); each has a state file of its own.
 */
describe('the DR state lost from Redis, and the media switch barrier, against a real primary and streaming replica', () => {
  let world: PartitionWorld;
  let cluster: PgCluster;
  let redis: OwnRedis;
  let proxy: TcpProxy;
  let a: TestInstance;
  let b: TestInstance;
  const fileA = join(tmpdir(), `sav3-state-loss-a-${randomBytes(4).toString('hex')}.json`);
  const fileB = join(tmpdir(), `sav3-state-loss-b-${randomBytes(4).toString('hex')}.json`);
  const startA = () => world.startDirect({ INSTANCE_ID: 'loss-a', DR_STATE_FILE: fileA });
  const startB = () => world.startProxied({ INSTANCE_ID: 'loss-b', DR_STATE_FILE: fileB });

  beforeAll(async () => {
    world = await startPartitionWorld({
      bucket: 'loss-primary',
      backupBucket: 'loss-backup',
      env: { HEALTH_TIMEOUT_MS: '500', HEALTH_INTERVAL_MS: '300', DR_STATE_LEASE_MS: String(LEASE_MS) },
    });
    ({ cluster, redis, proxy } = world);
    a = await startA();
    b = await startB();
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
    for (const f of [fileA, fileB]) rmSync(f, { force: true });
  });

  const readOnly = (api: TestInstance, enabled: boolean) =>
    request(api.url)
      .put('/admin/read-only')
      .set(auth)
      .send({ enabled, reason: enabled ? 'incident' : 'over' });
  const post = (api: TestInstance, path: string, body: object) => request(api.url).post(path).set(auth).send(body);
  const put = (api: TestInstance, key: string) => request(api.url).put(`/media/${key}`).send(Buffer.from(key));
  const storedState = async () => {
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      const raw = await client.get(`${world.prefix}dr:state`);
      return raw === null ? null : (JSON.parse(raw) as { version: number; seeded?: boolean; readOnly: { enabled: boolean } });
    } finally {
      client.disconnect();
    }
  };

  it('a media switch raises the write barrier: uploads in flight are not acknowledged on the old backend after it answered, and the answer says how many', async () => {
    const held = await Promise.all([0, 1].map((i) => heldUpload(i ? a.url : b.url, `loss/media-held-${i}`)));
    const sw = await post(a, '/admin/media/switch', { to: 'backup' });
    expect(sw.status).toBe(200);
    expect(sw.body).toMatchObject({ changed: true, to: 'backup', propagation: { complete: true, applied: 2 } });
    for (const h of held) {
      const answer = await h.finish();
      expect(answer.status).toBe(503);
      expect(answer.body.error?.code).toBe('write_fenced');
      expect(await rowOn(cluster.primary.url(), h.key)).toBeNull();
    }
    // Both uploads were running on their instance when it applied the switch; neither was committing yet.
    expect(sw.body.writes).toMatchObject({ inFlight: 2, waitedFor: 0, failing: 2, drained: true, instancesReporting: 2 });
    // A new upload goes to the new backend.
    const after = await put(b, 'loss/media-after');
    expect(after.status).toBe(201);
    expect(after.body.backend).toBe('backup');
    expect((await post(a, '/admin/media/switch', { to: 'primary' })).status).toBe(200);
  });

  it('a stale instance (lease run out) does not put its older copy into an emptied Redis: it refuses writes (state_unknown) until the newest copy returns, which wins', async () => {
    proxy.setMode('refuse');
    const on = await readOnly(a, true);
    expect(on.status).toBe(200);
    expect(on.body.propagation.stale.map((i: { id: string }) => i.id)).toEqual(['loss-b']);
    // The only instance holding the current state (read-only on) goes away; Redis restarts empty.
    await a.stop();
    await redis.stop();
    await redis.start();
    proxy.setMode('pass');

    // b (read-only off in its copy, lease run out) reconnects to the empty Redis.
    const refused = await eventually(
      () => put(b, 'loss/stale-write'),
      (r) => r.body.error?.code === 'state_unknown',
      10_000,
    );
    expect(refused.status).toBe(503);
    await sleep(2500);
    expect((await put(b, 'loss/stale-write-2')).status).toBe(503);
    expect(await storedState()).toBeNull();
    const state = await request(b.url).get('/admin/dr/state').set(auth);
    expect(state.body.stateLost).toMatchObject({ reason: expect.stringMatching(/waiting for loss-a/) });
    const health = await request(b.url).get('/health/database').set(auth);
    expect(health.status).toBe(503);
    expect(health.body.error.code).toBe('state_unknown');
    const ready = await request(b.url).get('/health/ready');
    expect(ready.status).toBe(200);
    expect(ready.body.checks.drState).toBe('degraded');
    expect((await readOnly(b, true)).body.error?.code).toBe('state_unknown');
    expect(await rowOn(cluster.primary.url(), 'loss/stale-write')).toBeNull();

    // a returns from its state file: its copy is the newest of the instances' copies, so it wins.
    a = await startA();
    const back = await eventually(
      () => put(b, 'loss/after-return'),
      (r) => r.body.error?.code === 'read_only',
      10_000,
    );
    expect(back.status).toBe(503);
    expect(await storedState()).toMatchObject({ version: on.body.version, readOnly: { enabled: true } });
    const off = await readOnly(a, false);
    expect(off.status).toBe(200);
    expect(off.body.propagation).toMatchObject({ complete: true, applied: 2 });
    expect((await put(b, 'loss/writable-again')).status).toBe(201);
  }, 60_000);

  // Issue 10 F2: a brand-new instance (no state file) seeds the default (version 0) into the emptied
  // Redis while the holders of the real state are away; when they return they must not follow it.
  it('a blind seed by a fresh instance never lowers the state: returning holders put theirs back (read-only stays on)', async () => {
    const on = await readOnly(a, true);
    expect(on.status).toBe(200);
    // The holders go away (a stops, its file keeps the state; b is cut off), Redis restarts empty.
    proxy.setMode('refuse');
    await a.stop();
    await redis.stop();
    await redis.start();
    const fileC = join(tmpdir(), `sav3-state-loss-c-${randomBytes(4).toString('hex')}.json`);
    const c = await world.startDirect({ INSTANCE_ID: 'loss-c', DR_STATE_FILE: fileC });
    try {
      const seeded = await eventually(storedState, (st) => st !== null, 10_000);
      // Marked as a blind seed, at most at the database write fence's epoch (the last change's version).
      expect(seeded).toMatchObject({ seeded: true, readOnly: { enabled: false } });
      expect(seeded!.version).toBeLessThanOrEqual(on.body.version);

      // The holders return: the higher version wins, everywhere, read-only on.
      proxy.setMode('pass');
      a = await startA();
      const back = await eventually(storedState, (st) => st !== null && st.readOnly.enabled, 10_000);
      expect(back!.version).toBeGreaterThanOrEqual(on.body.version);
      const refused = await eventually(
        () => put(c, 'loss/after-seed'),
        (r) => r.body.error?.code === 'read_only',
        10_000,
      );
      expect(refused.status).toBe(503);
      expect(await rowOn(cluster.primary.url(), 'loss/after-seed')).toBeNull();
      expect(a.logs() + b.logs()).toMatch(/DR state conflict/);
      const off = await readOnly(a, false);
      expect(off.status).toBe(200);
      expect((await put(c, 'loss/after-seed')).status).toBe(201);
    } finally {
      await c.stop();
      rmSync(fileC, { force: true });
    }
  }, 60_000);

  it('the state lost after a promotion: a fresh seed points at the promoted node (never the fenced old primary), and a reset onto the old primary is refused (412 naming the newer node)', async () => {
    expect((await readOnly(a, true)).status).toBe(200);
    const promote = await post(a, '/admin/database/promote', { confirm: 'promote-replica', maxLagSeconds: 3600 });
    expect(promote.status).toBe(200);
    const switched = await post(a, '/admin/database/switch', { to: 'replica' });
    expect(switched.status).toBe(200);
    // After promote + switch both nodes' identities are recorded (issue 10 F5; the promotion records the former primary), the old primary on the older timeline.
    expect(switched.body.database.nodes).toMatchObject({ primary: { timeline: 1 }, replica: { timeline: 2 } });
    expect(switched.body.database.nodes.primary.systemId).toBe(switched.body.database.nodes.replica.systemId);
    expect((await readOnly(a, false)).status).toBe(200);
    expect((await put(a, 'loss/on-promoted')).status).toBe(201);
    expect(await rowOn(cluster.replica.url(), 'loss/on-promoted')).not.toBeNull();
    expect(await rowOn(cluster.primary.url(), 'loss/on-promoted')).toBeNull();

    // Everything lost: both instances stop, their files are gone, Redis restarts empty. A fresh
    // instance seeds the state (issue 10 F2): not blindly the old primary, but the newest writable
    // node (the promoted replica; the old primary is fenced), with both nodes' identities recorded.
    await a.stop();
    await b.stop();
    for (const f of [fileA, fileB]) rmSync(f, { force: true });
    await redis.stop();
    await redis.start();
    a = await startA();
    const seeded = (await request(a.url).get('/admin/dr/state').set(auth)).body;
    expect(seeded).toMatchObject({ seeded: true, database: { active: 'replica', by: 'system:seed', newestTimeline: 2 } });
    expect(Object.keys(seeded.database.nodes).sort()).toEqual(['primary', 'replica']);
    expect(seeded.database.nodes.replica.timeline).toBe(2);

    // Reads and writes go to the promoted node, never to the old primary (the seed's version is not
    // below the database write fence, so writes are not refused as stale).
    const read = await request(a.url).get('/media/loss/on-promoted').responseType('blob');
    expect(read.status).toBe(200);
    expect(Buffer.from(read.body).toString()).toBe('loss/on-promoted');
    const seededWrite = await eventually(
      () => put(a, 'loss/after-seed-promoted'),
      (r) => r.status === 201,
      5000,
    );
    expect(seededWrite.status).toBe(201);
    expect(await rowOn(cluster.replica.url(), 'loss/after-seed-promoted')).not.toBeNull();
    expect(await rowOn(cluster.primary.url(), 'loss/after-seed-promoted')).toBeNull();

    // A reset onto the old primary would point writes at the older node: refused, naming the newer one.
    const refused = await post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'state lost' });
    expect(refused.status).toBe(412);
    expect(refused.body.error).toMatchObject({ code: 'newer_writable_replica' });
    expect(refused.body.error.message).toMatch(/replica takes writes on timeline 2/);
    const reset = await post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'state lost', database: 'replica' });
    expect(reset.status).toBe(200);
    expect(reset.body.state.database).toMatchObject({ active: 'replica', newestTimeline: 2 });
    const write = await eventually(
      () => put(a, 'loss/after-reset'),
      (r) => r.status === 201,
      5000,
    );
    expect(write.status).toBe(201);
    expect(await rowOn(cluster.replica.url(), 'loss/after-reset')).not.toBeNull();

    // The promoted node down, a reset onto the old primary (older timeline) is refused even though
    // nothing else takes writes now: the newest timeline recorded survives the reset (found by an
    // outside attack: the reset forgot it, and a write was later acknowledged on timeline 1).
    await cluster.replica.stop('immediate');
    try {
      const older = await post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'replica lost' });
      expect(older.status).toBe(412);
      expect(older.body.error).toMatchObject({ code: 'older_than_newest_timeline', newestTimeline: 2, targetTimeline: 1 });
      // Accepted by the operator: timeline 2 is recorded as abandoned (fenced should it come back).
      const accepted = await post(a, '/admin/dr/state/reset', {
        confirm: 'reset-dr-state',
        reason: 'replica lost for good',
        acceptOlderTimeline: true,
      });
      expect(accepted.status).toBe(200);
      expect(accepted.body.state.database).toMatchObject({
        active: 'primary',
        abandonedTimelines: [expect.objectContaining({ timeline: 2, node: 'replica' })],
      });
    } finally {
      await cluster.replica.start();
    }
    // While its timeline was abandoned it came back and is fenced like a former primary.
    const fence = () => sql(cluster.replica.url(), "SELECT current_setting('default_transaction_read_only') AS v");
    expect(await eventually(fence, (rows) => rows[0]?.v === 'on', 15_000, 300)).toEqual([{ v: 'on' }]);
    // Back onto the promoted node by the operator's choice: its timeline is no longer abandoned.
    const back = await eventually(
      () => post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'replica back', database: 'replica' }),
      (r) => r.status === 200,
      15_000,
      300,
    );
    expect(back.body.state.database).toMatchObject({ active: 'replica', newestTimeline: 2, abandonedTimelines: [] });
    // The reset onto the fenced node keeps read-only mode on; the operator lifts that fence by hand,
    // as for any fenced node, then the mode.
    expect(back.body.state.readOnly).toMatchObject({
      enabled: true,
      reason: expect.stringContaining('kept on: replica is fenced read-only'),
    });
    expect(await fence()).toEqual([{ v: 'on' }]);
    await sql(cluster.replica.url(), 'ALTER SYSTEM RESET default_transaction_read_only');
    await sql(cluster.replica.url(), 'SELECT pg_reload_conf()');
    const lifted = await eventually(
      () => request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'fence lifted' }),
      (r) => r.status === 200,
      10_000,
      300,
    );
    expect(lifted.status).toBe(200);
    const again = await eventually(
      () => put(a, 'loss/after-second-reset'),
      (r) => r.status === 201,
      10_000,
    );
    expect(again.status).toBe(201);

    // Both nodes down: a reset cannot see the target's timeline, and still keeps the newest one
    // recorded and the nodes' identities (found by an outside attack: it dropped both, and the old
    // primary, started again, acknowledged writes on timeline 1).
    await Promise.all([cluster.replica.stop('immediate'), cluster.primary.stop('immediate')]);
    try {
      const blind = await post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'both down', database: 'primary' });
      expect(blind.status).toBe(200);
      expect(blind.body.state.database).toMatchObject({
        active: 'primary',
        newestTimeline: 2,
        nodes: { primary: { timeline: 1 }, replica: { timeline: 2 } },
      });
      // A target that does not answer is not known to take writes: read-only mode stays on.
      expect(blind.body.state.readOnly).toMatchObject({
        enabled: true,
        reason: expect.stringContaining('kept on: primary does not answer'),
      });
    } finally {
      await Promise.all([cluster.primary.start(), cluster.replica.start()]);
    }
    // The old primary answers on timeline 1, behind the newest: never written to, and read-only
    // mode cannot be lifted onto it.
    const lift = await eventually(
      () => request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'nodes back' }),
      (r) => r.status === 412 && /older than the newest/.test(r.body.error?.message ?? ''),
      10_000,
    );
    expect(lift.body.error.code).toBe('no_writable_node');
    const stale = await put(a, 'loss/on-old-timeline');
    expect(stale.status).toBe(503);
    expect(await rowOn(cluster.primary.url(), 'loss/on-old-timeline')).toBeNull();
    const home = await post(a, '/admin/dr/state/reset', {
      confirm: 'reset-dr-state',
      reason: 'replica is the primary',
      database: 'replica',
    });
    expect(home.status).toBe(200);
  }, 150_000);

  // Issue 10 F4.
  it('two racing resets: one wins, the other 409; a reset keeps the media backend unless told, and answers with propagation and writes', async () => {
    const reset = (extra: object = {}) =>
      post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'race', database: 'replica', ...extra });
    const race = await Promise.all([reset(), reset()]);
    expect(race.map((r) => r.status).sort()).toEqual([200, 409]);
    const lost = race.find((r) => r.status === 409)!;
    expect(lost.body.error).toMatchObject({ code: 'conflict' });
    const won = race.find((r) => r.status === 200)!;
    expect(won.body.propagation).toMatchObject({ complete: true });
    expect(won.body.writes).toMatchObject({
      databaseFence: 'raised',
      fenceEpoch: won.body.version,
      fenceNodes: { replica: { outcome: 'raised' } },
    });

    // The media backend: as given, then kept by a reset that does not name one.
    const toBackup = await reset({ media: 'backup' });
    expect(toBackup.status).toBe(200);
    expect(toBackup.body.state.media.active).toBe('backup');
    const kept = await reset();
    expect(kept.status).toBe(200);
    expect(kept.body.state.media.active).toBe('backup');
    // A stale expectVersion is refused.
    const stale = await reset({ expectVersion: toBackup.body.version });
    expect(stale.status).toBe(409);
    expect((await reset({ media: 'primary', expectVersion: kept.body.version })).status).toBe(200);
  }, 60_000);
});
