import { randomUUID } from 'node:crypto';
import pg from 'pg';
import request from 'supertest';
import { createPrisma, disconnectPrisma } from '../../src/adapters/database-clients.ts';
import { PrismaMediaRepository } from '../../src/services/media/media-repository.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startClusterWorld, type ClusterWorld } from '../support/world.ts';
import { eventually } from '../../support/common.ts';
import { sql } from '../support/dr-scripts.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
type Checks = { checks?: { name: string; ok: boolean; detail: string }[] };
const check = (body: Checks, name: string) => body.checks?.find((c) => c.name === name);

/**
 * A standby configured to wait for a synchronous standby of its own (synchronous_standby_names
 * copied from the primary) hangs every commit once promoted: nothing streams from it. Found by an
 * outside attack: a switchover promoted it, the rollback failed, and neither node took writes.
 */
describe('promoting a standby whose commits would wait for a synchronous standby', () => {
  let world: ClusterWorld;
  let api: TestInstance;

  beforeAll(async () => {
    world = await startClusterWorld({ bucket: 'sync-standby', env: { HEALTH_INTERVAL_MS: '200', HEALTH_TIMEOUT_MS: '1000' } });
    api = await world.start();
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
  });

  it('is refused by the promote and the switchover checks, naming the setting; once reset, both checks pass', async () => {
    const replica = world.cluster.replica.url();
    await sql(replica, "ALTER SYSTEM SET synchronous_standby_names = '*'");
    await sql(replica, 'SELECT pg_reload_conf()');
    const promote = () => request(api.url).post('/admin/database/promote').set(auth).send({ confirm: 'promote-replica', dryRun: true });
    const switchover = () =>
      request(api.url).post('/admin/database/switchover').set(auth).send({ to: 'replica', confirm: 'switchover', dryRun: true });

    const refused = await eventually(
      async () => (await promote()).body as Checks,
      (b) => check(b, 'replica_not_waiting_for_sync_standby')?.ok === false,
      15_000,
      200,
    );
    expect(check(refused, 'replica_not_waiting_for_sync_standby')!.detail).toContain('ALTER SYSTEM RESET synchronous_standby_names');
    expect((refused as { wouldPromote?: boolean }).wouldPromote).toBe(false);
    const so = await switchover();
    expect(check(so.body, 'target_not_waiting_for_sync_standby')).toMatchObject({ ok: false });
    expect(await sql(replica, 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);

    await sql(replica, 'ALTER SYSTEM RESET synchronous_standby_names');
    await sql(replica, 'SELECT pg_reload_conf()');
    const passed = await eventually(
      async () => (await promote()).body as Checks,
      (b) => check(b, 'replica_not_waiting_for_sync_standby')?.ok === true,
      15_000,
      200,
    );
    expect(check(passed, 'replica_not_waiting_for_sync_standby')!.ok).toBe(true);
    expect(check((await switchover()).body, 'target_not_waiting_for_sync_standby')).toMatchObject({ ok: true });
  }, 90_000);

  it('a primary whose commits wait for a synchronous standby that is not connected is not writable: health says so, writes are refused at once (never hang)', async () => {
    const primary = world.cluster.primary.url();
    const health = async () =>
      (await request(api.url).get('/health/database').set(auth)).body as { status: string; error?: { code: string; message?: string } };
    try {
      // The streaming replica is a synchronous standby under '*': commits do not hang, nothing changes.
      await sql(primary, "ALTER SYSTEM SET synchronous_standby_names = '*'");
      await sql(primary, 'SELECT pg_reload_conf()');
      await eventually(
        async () => (await sql<{ s: string }>(primary, 'SELECT sync_state AS s FROM pg_stat_replication'))[0]?.s,
        (s) => s === 'sync',
        10_000,
        100,
      );
      await new Promise((r) => setTimeout(r, 600));
      expect((await health()).status).not.toBe('unhealthy');
      expect((await request(api.url).put('/media/sync/ok').send('x')).status).toBe(201);

      // A name no standby has: every commit would wait forever.
      await sql(primary, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
      await sql(primary, 'SELECT pg_reload_conf()');
      const hung = await eventually(health, (b) => b.error?.code === 'not_writable', 10_000, 100);
      expect(hung.status).toBe('unhealthy');
      expect(hung.error!.message).toContain('synchronous standby');
      const started = Date.now();
      const refused = await request(api.url).put('/media/sync/refused').send('x');
      expect({ status: refused.status, code: refused.body.error?.code ?? refused.body.code }).toEqual({
        status: 503,
        code: 'not_writable',
      });
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await sql(primary, "SELECT count(*)::int AS n FROM media_objects WHERE key = 'sync/refused'")).toEqual([{ n: 0 }]);

      // Read-only mode cannot be lifted onto it, by hand or by a state reset (which keeps it on).
      expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'sync hang' })).status).toBe(200);
      const lift = await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'try' });
      expect({ status: lift.status, code: lift.body.error?.code }).toEqual({ status: 412, code: 'no_writable_node' });
      const reset = await request(api.url).post('/admin/dr/state/reset').set(auth).send({ confirm: 'reset-dr-state', reason: 'sync hang' });
      expect(reset.status).toBe(200);
      expect(reset.body.state.readOnly).toMatchObject({ enabled: true, reason: expect.stringContaining('synchronous standby') });
    } finally {
      await sql(primary, 'ALTER SYSTEM RESET synchronous_standby_names');
      await sql(primary, 'SELECT pg_reload_conf()');
    }
    await eventually(health, (b) => b.status !== 'unhealthy', 10_000, 100);
    const off = await eventually(
      () => request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'sync back' }),
      (r) => r.status === 200,
      10_000,
      200,
    );
    expect(off.status).toBe(200);
    expect((await request(api.url).put('/media/sync/back').send('x')).status).toBe(201);
  }, 90_000);

  it('a synchronous standby setting more standbys than stream (FIRST 2): health says not_writable once a commit waited 2 s, and a commit caught waiting is never told "not saved"', async () => {
    const primary = world.cluster.primary.url();
    const health = async () =>
      (await request(api.url).get('/health/database').set(auth)).body as { status: string; error?: { code: string; message?: string } };
    const client = createPrisma(primary);
    const repo = new PrismaMediaRepository(() => client, 'sync:');
    const waiter = new pg.Client({ connectionString: primary });
    await waiter.connect();
    try {
      await waiter.query('CREATE TABLE IF NOT EXISTS sync_wait_probe (x int)');
      await sql(primary, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 2 (*)'");
      await sql(primary, 'SELECT pg_reload_conf()');
      // One standby streams: it is connected as a synchronous one, yet every commit waits for a second.
      const caught = waiter.query('INSERT INTO sync_wait_probe VALUES (1)');
      const hung = await eventually(health, (b) => b.error?.code === 'not_writable', 15_000, 200);
      expect(hung.error!.message).toContain('synchronous standby');
      // Not visible yet, but applied: a lost answer's lookup says "unknown", never "not committed".
      expect(await repo.versionCommitted(randomUUID())).toBeUndefined();
      await sql(primary, 'ALTER SYSTEM RESET synchronous_standby_names');
      await sql(primary, 'SELECT pg_reload_conf()');
      await caught;
      expect(await repo.versionCommitted(randomUUID())).toBe(false);
    } finally {
      await sql(primary, 'ALTER SYSTEM RESET synchronous_standby_names').catch(() => undefined);
      await sql(primary, 'SELECT pg_reload_conf()').catch(() => undefined);
      await waiter.end().catch(() => undefined);
      await disconnectPrisma(client).catch(() => undefined);
    }
    await eventually(health, (b) => b.status !== 'unhealthy', 10_000, 100);
  }, 90_000);
});
