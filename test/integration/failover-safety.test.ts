import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import request from 'supertest';
import type { PgCluster } from '../../support/pg-cluster.ts';
import { heldUpload } from '../support/held-upload.ts';
import { startOwnRedis, type OwnRedis } from '../../support/redis-server.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startClusterWorld, type ClusterWorld } from '../support/world.ts';
import { eventually, sha256Hex } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  // Fencing ends every client session on the node, ours included: never crash on that.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

const rowOn = async (url: string, key: string) =>
  (await query<{ sha256: string }>(url, 'SELECT sha256 FROM media_objects WHERE key = $1', [key]))[0]?.sha256 ?? null;

/** The operator's calls, and uploads that remember each acknowledged write (key → sha256) in `acked`. */
function operator(acked: Map<string, string>) {
  return {
    put: async (api: TestInstance, key: string, body: Buffer) => {
      const res = await request(api.url).put(`/media/${key}`).send(body);
      if (res.status === 201) acked.set(key, sha256Hex(body));
      return res;
    },
    readOnly: (api: TestInstance, enabled: boolean, extra: object = {}) =>
      request(api.url)
        .put('/admin/read-only')
        .set(auth)
        .send({ enabled, reason: enabled ? 'incident' : 'over', ...extra }),
    post: (api: TestInstance, path: string, body: object) => request(api.url).post(path).set(auth).send(body),
  };
}

const HEALTH_ENV = { HEALTH_TIMEOUT_MS: '500', HEALTH_INTERVAL_MS: '300' };

/**
 * One primary + streaming replica, two instances, Redis of the test's own. Every test starts from
 * normal running (Redis up, the primary the writable target, read-only off) and ends with each
 * write it had acknowledged on the primary with its sha256.
 */
describe('failover safety against a real primary and streaming replica', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let redis: OwnRedis;
  let a: TestInstance;
  let b: TestInstance;
  let prefix: string;
  const acked = new Map<string, string>();
  const { put, readOnly, post } = operator(acked);

  beforeAll(async () => {
    redis = await startOwnRedis();
    world = await startClusterWorld({ bucket: 'failover-safety', env: { REDIS_URL: redis.url, ...HEALTH_ENV } });
    cluster = world.cluster;
    prefix = world.prefix;
    a = await world.start({ INSTANCE_ID: 'safe-a' });
    b = await world.start({ INSTANCE_ID: 'safe-b' });
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
    await redis?.stop();
  });

  const redisAnswers = async () => {
    const probe = new Redis(redis.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      return (await probe.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      probe.disconnect();
    }
  };

  // Normal running, whatever an earlier test left: Redis up, and if read-only is on or a standby
  // is the target, the operator's way back (read-only on, switch to the primary, read-only off).
  beforeEach(async () => {
    acked.clear();
    if (!(await redisAnswers())) await redis.start();
    for (const api of [a, b]) {
      await eventually(
        async () => (await request(api.url).get('/admin/dr/state').set(auth)).body,
        (s) => s.stateStore === 'up',
        8000,
      );
    }
    const s = (await request(a.url).get('/admin/dr/state').set(auth)).body;
    if (s.readOnly.enabled || s.database.active !== 'primary') {
      for (const step of [() => readOnly(a, true), () => post(a, '/admin/database/switch', { to: 'primary' }), () => readOnly(a, false)]) {
        const res = await step();
        if (res.status !== 200) throw new Error(`set-up: ${res.status} ${JSON.stringify(res.body)}`);
      }
    }
    for (const api of [a, b]) {
      await eventually(
        () => request(api.url).get('/health/database'),
        (r) => r.status === 200,
        8000,
      );
    }
  }, 30_000);
  afterEach(async () => {
    for (const [key, digest] of acked) expect([key, await rowOn(cluster.primary.url(), key)]).toEqual([key, digest]);
  });

  it('enabling read-only answers only once no instance will acknowledge a write any more, saying how many were in flight', async () => {
    for (let i = 0; i < 3; i += 1) expect((await put(i % 2 ? a : b, `safe/before-${i}`, Buffer.from(`before ${i}`))).status).toBe(201);
    const held = await Promise.all([0, 1, 2, 3].map((i) => heldUpload(i % 2 ? a.url : b.url, `safe/held-${i}`)));
    const on = await readOnly(a, true);
    expect(on.status).toBe(200);
    expect(on.body.propagation).toMatchObject({ applied: 2, total: 2 });
    expect(on.body.writes).toMatchObject({ inFlight: 4, failing: 4, drained: true, instancesReporting: 2 });
    const answers = await Promise.all(held.map((h) => h.finish()));
    for (const answer of answers) {
      expect(answer.status).toBe(503);
      expect(answer.body.error?.code).toBe('write_fenced');
    }
    for (const h of held) expect(await rowOn(cluster.primary.url(), h.key)).toBeNull();
    expect((await readOnly(a, false)).status).toBe(200);
  });

  it('a read-only TTL does not expire onto an unpromoted standby: it stays on, says why, and the refusal is audited', async () => {
    expect((await readOnly(a, true, { ttlSeconds: 2 })).status).toBe(200);
    const sw = await post(a, '/admin/database/switch', { to: 'replica' });
    expect(sw.status).toBe(200);
    const kept = await eventually(
      async () => (await request(b.url).get('/admin/dr/state').set(auth)).body,
      (s) => s.readOnly.expiresAt === null,
      6000,
    );
    expect(kept.readOnly).toMatchObject({ enabled: true, active: true, by: 'system:ttl' });
    expect(kept.readOnly.reason).toMatch(/kept on at TTL expiry: .*(standby|cannot be verified)/);
    const refused = await put(b, 'safe/on-standby', Buffer.from('x'));
    expect(refused.status).toBe(503);
    // Lifting it by hand while the standby is active is refused as well: a node takes writes
    // (the primary), but not the one writes go to; nothing changes and health stays truthful.
    const lift = await readOnly(a, false);
    expect({ status: lift.status, code: lift.body.error?.code }).toEqual({ status: 412, code: 'no_writable_node' });
    expect(lift.body.error.message).toMatch(
      /active database target \(replica\) is a standby.*switch to primary \(POST \/admin\/database\/switch\), or promote replica, first/,
    );
    for (const api of [a, b]) {
      expect((await request(api.url).get('/admin/read-only').set(auth)).body).toMatchObject({ enabled: true });
      const health = await request(api.url).get('/health');
      expect(health.body).toMatchObject({ readOnly: true });
      expect(health.body.components.database).toMatchObject({ writable: false });
      const write = await put(api, 'safe/not-writable', Buffer.from('x'));
      expect(write.status).toBe(503);
      expect(write.body.error.code).toBe('read_only');
    }
    expect((await readOnly(a, true)).status).toBe(200);
    expect((await post(a, '/admin/database/switch', { to: 'primary' })).status).toBe(200);
    expect((await readOnly(a, false)).status).toBe(200);
    expect((await put(a, 'safe/back-on-primary', Buffer.from('back'))).status).toBe(201);
    // Audit events written while the standby was active were spooled; they reach the primary now.
    const audit = await eventually(
      () => request(a.url).get('/admin/audit?limit=50').set(auth),
      (r) => r.body.events?.some((e: { action: string; result: string }) => e.action === 'read_only.expire' && e.result === 'refused'),
      8000,
    );
    expect(
      audit.body.events.some((e: { action: string; result: string }) => e.action === 'read_only.expire' && e.result === 'refused'),
    ).toBe(true);
  });

  it('a lift and a switch onto the standby racing on two instances never leave read-only off with the standby active', async () => {
    expect((await readOnly(a, true)).status).toBe(200);
    // 1. The lift passes its check on b (the primary active and writable); a switch to the standby
    //    lands on a before the lift is stored: the lift is a 409, nothing lifted.
    const readOnlyService = b.service.readOnly.service;
    const set = readOnlyService.set.bind(readOnlyService);
    let switched: request.Response | undefined;
    readOnlyService.set = async (...args) => {
      readOnlyService.set = set;
      switched = await post(a, '/admin/database/switch', { to: 'replica' });
      return set(...args);
    };
    const lift = await readOnly(b, false);
    expect({ switched: switched?.status, lift: lift.status, code: lift.body.error?.code }).toEqual({
      switched: 200,
      lift: 409,
      code: 'conflict',
    });
    let state = (await request(a.url).get('/admin/dr/state').set(auth)).body;
    expect(state).toMatchObject({ readOnly: { enabled: true }, database: { active: 'replica' } });
    // Tried again, the lift is judged on the state it would replace: the standby is active.
    const again = await readOnly(b, false);
    expect({ status: again.status, code: again.body.error?.code }).toEqual({ status: 412, code: 'no_writable_node' });
    expect((await post(a, '/admin/database/switch', { to: 'primary' })).status).toBe(200);

    // 2. A switch to the standby passes its check on a (read-only on); a lift lands on b before
    //    the switch is stored: the switch is refused (412 read_only_for_standby), nothing switched.
    const dr = a.service.drState.service;
    const change = dr.change.bind(dr);
    let lifted: request.Response | undefined;
    dr.change = async (...args: Parameters<typeof change>) => {
      dr.change = change;
      lifted = await readOnly(b, false);
      return change(...args);
    };
    const sw = await post(a, '/admin/database/switch', { to: 'replica' });
    expect({ lifted: lifted?.status, switch: sw.status }).toEqual({ lifted: 200, switch: 412 });
    expect(sw.body.error.message).toContain('read_only_for_standby');
    state = (await request(a.url).get('/admin/dr/state').set(auth)).body;
    expect(state).toMatchObject({ readOnly: { enabled: false }, database: { active: 'primary' } });
    expect((await put(a, 'safe/after-race', Buffer.from('race'))).status).toBe(201);
  });

  it('an instance restarted while Redis is down follows its state file; Redis coming back empty gets that state back', async () => {
    expect((await put(a, 'safe/before-redis-down', Buffer.from('stored'))).status).toBe(201);
    expect((await readOnly(a, true)).status).toBe(200);
    const version = (await request(a.url).get('/admin/dr/state').set(auth)).body.version;
    await redis.stop();
    const file = b.service.config.drStateFile;
    await b.stop();
    b = await world.start({ INSTANCE_ID: 'safe-b', DR_STATE_FILE: file });
    const write = await put(b, 'safe/while-redis-down', Buffer.from('x'));
    expect(write.status).toBe(503);
    expect(write.body.error.code).toBe('read_only');
    const health = await request(b.url).get('/health');
    expect(health.body).toMatchObject({ readOnly: true, stateVersion: version });
    expect((await request(b.url).get('/media/safe/before-redis-down')).status).toBe(200);
    await redis.start();
    const state = await eventually(
      async () => (await request(a.url).get('/admin/dr/state').set(auth)).body,
      (s) => s.stateStore === 'up' && s.version === version,
      8000,
    );
    expect(state).toMatchObject({ version, readOnly: { enabled: true }, database: { active: 'primary' } });
    await eventually(
      async () => (await request(b.url).get('/admin/dr/state').set(auth)).body,
      (s) => s.stateStore === 'up',
      8000,
    );
    expect(
      (
        await eventually(
          () => readOnly(b, false),
          (r) => r.status === 200,
          5000,
        )
      ).status,
    ).toBe(200);
    expect((await put(b, 'safe/after-redis', Buffer.from('y'))).status).toBe(201);
  });

  it('a state recording other nodes than the configured ones refuses writes (state_mismatch) until an operator resets it', async () => {
    // The forged state is built on a stored one that records both nodes: a switch records the node
    // it switches to, so the operator switches to the replica and back first (read-only on meanwhile).
    for (const step of [
      () => readOnly(a, true),
      () => post(a, '/admin/database/switch', { to: 'replica' }),
      () => post(a, '/admin/database/switch', { to: 'primary' }),
      () => readOnly(a, false),
    ]) {
      expect((await step()).status).toBe(200);
    }
    const forged = { ...(await request(a.url).get('/admin/dr/state').set(auth)).body };
    const current = forged.database.nodes;
    expect(current).toMatchObject({ primary: { systemId: expect.any(String) }, replica: { systemId: expect.any(String) } });
    const other = createHash('sha256').update('another cluster').digest('hex').slice(0, 12);
    const client = new Redis(redis.url);
    try {
      const stored = JSON.parse((await client.get(`${prefix}dr:state`))!);
      stored.version += 1;
      stored.database.nodes = { ...current, replica: { ...current.replica, systemId: `9${other.replace(/\D/g, '')}` } };
      await client.set(`${prefix}dr:state`, JSON.stringify(stored));
      await client.publish(`${prefix}dr:changed`, String(stored.version));
    } finally {
      client.disconnect();
    }
    // A write in flight when the state arrives is fenced (write_fenced); later ones are refused up front.
    const refused = await eventually(
      () => put(a, 'safe/mismatch', Buffer.from('m')),
      (r) => r.body.error?.code === 'state_mismatch',
      5000,
    );
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('state_mismatch');
    const health = await eventually(
      () => request(b.url).get('/health'),
      (r) => r.body.components?.database?.error?.code === 'state_mismatch',
      5000,
    );
    expect(health.body.components.database.error.code).toBe('state_mismatch');
    expect((await post(a, '/admin/dr/state/reset', { confirm: 'yes', reason: 'x' })).status).toBe(400);
    const done = await post(a, '/admin/dr/state/reset', { confirm: 'reset-dr-state', reason: 'state from another cluster' });
    expect(done.status).toBe(200);
    expect(done.body.state.database.nodes.replica.systemId).toBe(current.replica.systemId);
    // The reset state is the initial one (read-only off, the primary the target), with the nodes' own identities.
    expect(done.body.state).toMatchObject({ readOnly: { enabled: false }, database: { active: 'primary' } });
    // Once the other instance has the reset state, it takes writes again.
    await eventually(
      async () => (await request(b.url).get('/admin/dr/state').set(auth)).body,
      (st) => st.version >= done.body.state.version,
      5000,
    );
    const after = await put(b, 'safe/after-reset', Buffer.from('r'));
    expect([after.status, after.body.error?.code]).toEqual([201, undefined]);
    const reset = (r: { body: { events?: { action: string; result: string }[] } }) =>
      r.body.events?.some((e) => e.action === 'dr_state.reset' && e.result === 'success') === true;
    expect(reset(await eventually(() => request(a.url).get('/admin/audit?limit=50').set(auth), reset, 8000))).toBe(true);
  });
});

/**
 * One story, as an incident would run it: the primary dies with read-only on and reads are kept
 * up; the replica is promoted and switched to with uploads in flight; the old primary comes back
 * and is fenced; every acknowledged write is on the promoted node. Each step needs the one before.
 */
describe('an incident on a real primary and streaming replica', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let a: TestInstance;
  let b: TestInstance;
  const acked = new Map<string, string>();
  const { put, readOnly, post } = operator(acked);

  beforeAll(async () => {
    world = await startClusterWorld({ bucket: 'failover-incident', env: HEALTH_ENV });
    cluster = world.cluster;
    a = await world.start({ INSTANCE_ID: 'incident-a' });
    b = await world.start({ INSTANCE_ID: 'incident-b' });
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  });

  it('the primary dies (reads kept up), the replica is promoted with uploads in flight (none acknowledged), the old primary returns fenced; every acknowledged write is on the promoted node', async () => {
    expect((await put(a, 'safe/back-on-primary', Buffer.from('back'))).status).toBe(201);

    // With the primary dead and read-only on, every instance stays ready and serves reads from the replica.
    await eventually(
      async () => rowOn(cluster.replica.url(), 'safe/back-on-primary'),
      (v) => v !== null,
      5000,
    );
    // Uploads in flight (admitted while writes were open) when the primary dies and read-only goes on.
    const held = await Promise.all([0, 1].map((i) => heldUpload(i ? a.url : b.url, `safe/switch-held-${i}`)));
    await cluster.primary.stop('immediate');
    const on = await readOnly(b, true);
    expect(on.status).toBe(200);
    expect(on.body.writes.inFlight).toBe(2);
    // The primary is dead: the fence could not be raised there, and the answer says so.
    expect(on.body.writes).toMatchObject({ databaseFence: 'not_raised', fenceNodes: { primary: { outcome: 'failed' } } });
    for (const api of [a, b]) {
      const ready = await eventually(
        () => request(api.url).get('/health/ready'),
        (r) => r.body.checks?.database === 'degraded',
        5000,
      );
      expect(ready.status).toBe(200);
      expect(ready.body.checks.database).toBe('degraded');
      const read = await request(api.url).get('/media/safe/back-on-primary');
      expect(read.status).toBe(200);
      expect(read.headers.etag).toBe(`"${sha256Hex(Buffer.from('back'))}"`);
      expect((await request(api.url).get('/health/database')).status).toBe(503);
    }

    // Lifting read-only mode with no node taking writes (primary dead, replica a standby) is refused (issue 10 F3).
    const lift = await readOnly(a, false);
    expect(lift.status).toBe(412);
    expect(lift.body.error.code).toBe('no_writable_node');

    // Promote and switch with uploads in flight: none is acknowledged, the promoted node is recorded with its timeline.
    const promote = await post(a, '/admin/database/promote', { confirm: 'promote-replica', maxLagSeconds: 3600 });
    expect(promote.status).toBe(200);
    expect(promote.body).toMatchObject({
      promoted: true,
      identity: { systemId: expect.any(String), timeline: 2 },
      oldPrimary: { fenced: false },
    });
    const sw = await post(b, '/admin/database/switch', { to: 'replica' });
    expect(sw.status).toBe(200);
    expect(sw.body.database).toMatchObject({ active: 'replica', newestTimeline: 2, nodes: { replica: { timeline: 2 } } });
    for (const h of held) expect((await h.finish()).status).toBe(503);
    expect((await readOnly(a, false)).status).toBe(200);
    for (const h of held) expect(await rowOn(cluster.replica.url(), h.key)).toBeNull();
    expect((await put(b, 'safe/after-promote', Buffer.from('after'))).status).toBe(201);

    // The old primary coming back is fenced (read-only, sessions ended), counted, audited, and never switched back to.
    await cluster.primary.start();
    const fenced = await eventually(
      async () =>
        (
          await query<{ v: string }>(cluster.primary.url(), "SELECT current_setting('default_transaction_read_only') AS v").catch(() => [])
        )[0]?.v,
      (v) => v === 'on',
      8000,
    );
    expect(fenced).toBe('on');
    // The fence ends client sessions after the setting shows: a session opened meanwhile may be
    // ended too; a write never succeeds, and once the fence is done it is refused as read-only.
    const refusal = await eventually(
      () =>
        query(cluster.primary.url(), 'CREATE TABLE stray_write (x int)').then(
          () => 'WRITTEN',
          (err: Error) => err.message,
        ),
      (m) => m === 'WRITTEN' || /read-only transaction/.test(m),
      8000,
    );
    expect(refusal).toMatch(/read-only transaction/);
    const metrics = await eventually(
      async () => (await request(a.url).get('/metrics')).text,
      (t) => /^sav3_database_writable_nodes 1$/m.test(t),
      5000,
    );
    expect(metrics).toMatch(/^sav3_database_writable_nodes 1$/m);
    const health = await eventually(
      () => request(a.url).get('/health/database'),
      (r) => r.body.fencedNodes?.includes('primary') === true,
      5000,
    );
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ target: 'replica', writableNodes: ['replica'], fencedNodes: ['primary'] });
    const back = await post(a, '/admin/database/switch', { to: 'primary', dryRun: true });
    expect(back.status).toBe(200);
    expect(back.body.wouldSwitch).toBe(false);
    expect(back.body.checks).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'newest_timeline', ok: false })]));
    const audit = await eventually(
      () => request(a.url).get('/admin/audit?limit=50').set(auth),
      (r) => r.body.events?.some((e: { action: string }) => e.action === 'database.fence'),
      5000,
    );
    expect(audit.body.events.find((e: { action: string }) => e.action === 'database.fence')).toMatchObject({
      actor: 'system:fence',
      result: 'success',
    });

    for (const [key, digest] of acked) expect([key, await rowOn(cluster.replica.url(), key)]).toEqual([key, digest]);
  }, 90_000);
});

describe('a promotion done outside the service while the primary still takes writes', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let api: TestInstance;

  beforeAll(async () => {
    world = await startClusterWorld({
      bucket: 'outside-promotion',
      env: { HEALTH_TIMEOUT_MS: '1000', HEALTH_INTERVAL_MS: '300' },
    });
    cluster = world.cluster;
    api = await world.start();
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  });

  it('is detected (two writable nodes), the node on the older timeline is fenced, and writes are refused until the operator switches', async () => {
    expect((await request(api.url).put('/media/outside/before').send(Buffer.from('before'))).status).toBe(201);
    await query(cluster.replica.url(), 'SELECT pg_promote(true, 30)');
    const fenced = await eventually(
      async () =>
        (
          await query<{ v: string }>(cluster.primary.url(), "SELECT current_setting('default_transaction_read_only') AS v").catch(() => [])
        )[0]?.v,
      (v) => v === 'on',
      8000,
    );
    expect(fenced).toBe('on');
    // The active target is the fenced former primary: health says so and writes are refused up front.
    const health = await eventually(
      () => request(api.url).get('/health/database'),
      (r) => r.body.error?.code === 'not_writable',
      5000,
    );
    expect(health.status).toBe(503);
    expect(health.body).toMatchObject({ writableNodes: ['replica'], fencedNodes: ['primary'] });
    const refused = await request(api.url).put('/media/outside/during').send(Buffer.from('x'));
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('not_writable');
    expect((await request(api.url).post('/admin/database/switch').set(auth).send({ to: 'replica' })).status).toBe(200);
    expect((await request(api.url).put('/media/outside/after').send(Buffer.from('after'))).status).toBe(201);
    expect(await rowOn(cluster.replica.url(), 'outside/after')).not.toBeNull();
    expect(await rowOn(cluster.primary.url(), 'outside/after')).toBeNull();
  });
});
