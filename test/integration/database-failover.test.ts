import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { eventually, sha256Hex } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe('database failover against a real primary and streaming replica', () => {
  let cluster: PgCluster;
  let s3: S3ServerHandle;
  let a: TestInstance;
  let b: TestInstance;
  const uploads = new Map<string, string>();

  beforeAll(async () => {
    cluster = await startPgCluster();
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    s3 = await startS3Server({ bucket: 'db-failover' });
    const env = {
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: cluster.primary.url(),
      DATABASE_REPLICA_URL: cluster.replica.url(),
      HEALTH_TIMEOUT_MS: '500',
    };
    const prefix = uniquePrefix();
    a = await startInstance({ ...env, INSTANCE_ID: 'db-a' }, prefix);
    b = await startInstance({ ...env, INSTANCE_ID: 'db-b' }, prefix);
  }, 60_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await s3?.destroy();
    await cluster?.destroy();
  });

  const post = (api: TestInstance, path: string, body: object) => request(api.url).post(path).set(auth).send(body);

  it('/health/database reports the primary and streaming replication with lag', async () => {
    await eventually(
      async () => (await request(a.url).get('/health/database')).body,
      (body) => body.replication?.state === 'streaming',
      5000,
    );
    a.service.health.invalidate();
    const res = await request(a.url).get('/health/database');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      target: 'primary',
      inRecovery: false,
      replication: { state: expect.stringMatching(/streaming|catching_up/), lagSeconds: expect.any(Number), lagBytes: expect.any(Number) },
    });
    expect((await request(a.url).get('/metrics')).text).toMatch(/^sav3_replication_lag_seconds \d/m);
  });

  it('stores uploads on the primary that the replica receives', async () => {
    for (let i = 0; i < 5; i += 1) {
      const body = randomBytes(1000);
      const res = await request(a.url).put(`/media/db/before-${i}`).send(body);
      expect(res.status).toBe(201);
      uploads.set(`db/before-${i}`, sha256Hex(body));
    }
  });

  it('refuses to switch to an unpromoted replica unless read-only mode is on (412 naming the precondition)', async () => {
    const res = await post(a, '/admin/database/switch', { to: 'replica' });
    expect(res.status).toBe(412);
    expect(res.body.error.code).toBe('precondition_failed');
    expect(res.body.error.message).toContain('read_only_for_standby');
    expect(res.body.error.checks).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'read_only_for_standby', ok: false })]));
  });

  it('promote requires confirm, and dryRun reports every check and changes nothing', async () => {
    expect((await post(a, '/admin/database/promote', {})).status).toBe(400);
    expect((await post(a, '/admin/database/promote', { confirm: 'yes' })).body.error.details.confirm).toBeDefined();
    const dry = await post(a, '/admin/database/promote', { confirm: 'promote-replica', dryRun: true });
    expect(dry.status).toBe(200);
    // The primary still takes writes and read-only mode is off: promoting now would lose writes.
    expect(dry.body).toMatchObject({ promoted: false, dryRun: true, wouldPromote: false });
    expect(dry.body.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([
      ['replica_configured', true],
      ['replica_reachable', true],
      ['replica_in_recovery', true],
      ['replica_not_waiting_for_sync_standby', true],
      ['replica_not_diverged', true],
      ['lag_within_bound', true],
      ['primary_writes_stopped', false],
    ]);
    a.service.health.invalidate();
    expect((await request(a.url).get('/health/database')).body.replication.state).not.toBe('promoted');
    const tight = await post(a, '/admin/database/promote', { confirm: 'promote-replica', dryRun: true, maxLagSeconds: -1 });
    expect(tight.status).toBe(400);
  });

  it('after the primary crashes: read-only, promote (one of two racing wins), switch, lift — nothing acknowledged is lost', async () => {
    await cluster.primary.stop('immediate');
    const killedAt = performance.now();

    expect((await request(a.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'primary crashed' })).status).toBe(200);
    const refused = await request(b.url).put('/media/db/during').send('x');
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBeDefined();

    const [p1, p2] = await Promise.all([
      post(a, '/admin/database/promote', { confirm: 'promote-replica', maxLagSeconds: 3600 }),
      post(b, '/admin/database/promote', { confirm: 'promote-replica', maxLagSeconds: 3600 }),
    ]);
    const statuses = [p1.status, p2.status].sort();
    const winner = p1.body.promoted ? p1 : p2;
    expect(winner.status).toBe(200);
    expect(winner.body).toMatchObject({ promoted: true, timings: { promoteMs: expect.any(Number) } });
    // The answer's version and fence are those of the change that recorded this promotion.
    expect(winner.body.writes).toMatchObject({ databaseFence: expect.any(String) });
    if (winner.body.writes.databaseFence !== 'not_applicable') expect(winner.body.writes.fenceEpoch).toBe(winner.body.version);
    // The old primary is dead: no restore point, and the answer says why rather than hiding it.
    expect(winner.body.restorePoint).toEqual({ error: expect.any(String) });
    expect(winner.body.dataLossWindow).toMatchObject({
      bytes: expect.any(Number),
      primaryLastKnownLsn: expect.any(String),
      description: expect.any(String),
    });
    const loser = winner === p1 ? p2 : p1;
    expect(loser.status === 409 || loser.body.alreadyPromoted === true).toBe(true);
    expect(statuses[0]).toBeGreaterThanOrEqual(200);

    const again = await post(a, '/admin/database/promote', { confirm: 'promote-replica' });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ promoted: false, alreadyPromoted: true });

    const sw = await post(b, '/admin/database/switch', { to: 'replica' });
    expect(sw.status).toBe(200);
    expect(sw.body).toMatchObject({
      changed: true,
      from: 'primary',
      to: 'replica',
      database: { active: 'replica', by: 'ops' },
      propagation: { applied: 2, total: 2 },
    });

    expect((await request(a.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'replica promoted' })).status).toBe(200);
    const first = await request(a.url).put('/media/db/after').send('after failover');
    expect(first.status).toBe(201);
    const rtoMs = performance.now() - killedAt;
    expect(rtoMs).toBeLessThan(10_000);

    for (const api of [a, b]) {
      api.service.health.invalidate();
      const health = await request(api.url).get('/health/database');
      expect(health.body).toMatchObject({
        status: 'degraded',
        target: 'replica',
        inRecovery: false,
        replication: { state: 'promoted', status: 'degraded' },
      });
    }
    for (const [key, digest] of uploads) {
      const res = await request(b.url).get(`/media/${key}`);
      expect(res.status).toBe(200);
      expect(res.headers.etag).toBe(`"${digest}"`);
    }
    const metrics = (await request(a.url).get('/metrics')).text;
    expect(metrics).toContain('sav3_database_active_target{target="replica"} 1');
    expect(metrics).toContain('sav3_database_active_target{target="primary"} 0');
    // Each instance counts the operations it ran: the promote ran on one, the switch on b.
    const both = metrics + (await request(b.url).get('/metrics')).text;
    expect(both).toContain('sav3_failover_total{kind="promote",result="success"} 1');
    expect(both).toContain('sav3_failover_total{kind="database_switch",result="success"} 1');
  });

  it('verify/database runs named checks on the new active target', async () => {
    const res = await post(a, '/admin/verify/database', {});
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('pass');
    expect(res.body.target).toBe('replica');
    expect(res.body.checks.map((c: { name: string; status: string }) => [c.name, c.status])).toEqual([
      ['connect', 'pass'],
      ['canary_write_read_delete', 'pass'],
      ['migrations_up_to_date', 'pass'],
      ['replication_status', 'pass'],
    ]);
  });

  it('every step is in the audit log', async () => {
    // Events of the outage were spooled (the old primary was dead) and are flushed to the new one.
    const audit = await eventually(
      () => request(a.url).get('/admin/audit?limit=30').set(auth),
      (r) =>
        r.status === 200 &&
        r.body.pending === 0 &&
        r.body.events.some((e: { action: string; result: string }) => e.action === 'database.promote' && e.result === 'success'),
      6000,
    );
    const actions = audit.body.events.map((e: { action: string; result: string }) => `${e.action}:${e.result}`);
    expect(actions).toEqual(
      expect.arrayContaining([
        'database.promote:success',
        'database.switch:success',
        'database.switch:refused',
        'database.promote:dry_run',
        'verify.database:success',
      ]),
    );
  });
});
