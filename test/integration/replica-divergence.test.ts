import { chownSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startClusterWorld, type ClusterWorld } from '../support/world.ts';
import { eventually } from '../../support/common.ts';
import { sql } from '../support/dr-scripts.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/** A file in a data directory, owned like the directory (the server runs as `postgres`). */
function writeOwned(dataDir: string, name: string, text: string, append = false): void {
  const path = join(dataDir, name);
  if (append) appendFileSync(path, text);
  else writeFileSync(path, text);
  const { uid, gid } = statSync(dataDir);
  chownSync(path, uid, gid);
}

/**
 * A standby that replayed past the point where its writer's timeline forked holds changes the
 * writer does not have (after a point-in-time restore of the primary, or an old primary turned
 * into a standby without pg_rewind). It can never follow the writer; promoting it would bring back
 * what the fork left behind. Found by an outside attack: health said "lag 0" and a promotion was
 * allowed.
 */
describe('a standby diverged from its writer', () => {
  let world: ClusterWorld;
  let api: TestInstance;

  beforeAll(async () => {
    world = await startClusterWorld({ bucket: 'diverge', env: { HEALTH_INTERVAL_MS: '200', HEALTH_TIMEOUT_MS: '1000' } });
    api = await world.start();
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
  });

  it('is reported as diverged (never "lag 0") and a promotion of it is refused', async () => {
    const { primary, replica } = world.cluster;
    // Healthy first: the check passes, so what follows is the divergence, not the check.
    const healthy = await eventually(
      async () =>
        (await request(api.url).post('/admin/database/promote').set(auth).send({ confirm: 'promote-replica', dryRun: true })).body,
      (b: { checks?: { name: string; ok: boolean }[] }) => b.checks?.some((c) => c.name === 'lag_within_bound' && c.ok) === true,
      20_000,
      200,
    );
    expect(healthy.checks).toContainEqual(expect.objectContaining({ name: 'replica_not_diverged', ok: true }));

    // Made with no instance watching (one would fence the old primary at once, as it should).
    await api.stop();
    // The replica becomes a primary of its own (timeline 2); the old primary writes on past the fork.
    await sql(replica.url(), 'SELECT pg_promote(true, 30)');
    await sql(primary.url(), 'CREATE TABLE after_fork AS SELECT g FROM generate_series(1, 1000) g');
    await sql(primary.url(), 'SELECT pg_switch_wal()');
    // The old primary restarted as a standby of the new one, without a rewind: it stays in recovery
    // on timeline 1, past the fork, and cannot follow timeline 2.
    await primary.stop('fast');
    writeOwned(primary.dataDir, 'standby.signal', '');
    writeOwned(
      primary.dataDir,
      'postgresql.auto.conf',
      `\nprimary_conninfo = 'host=127.0.0.1 port=${replica.port} user=postgres'\nrecovery_target_timeline = 'latest'\n`,
      true,
    );
    await primary.start();
    expect(await sql(primary.url(), 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
    api = await world.start();

    const health = await eventually(
      async () => (await request(api.url).get('/health/database').set(auth)).body,
      (b: { replication?: { state?: string }; writer?: string }) => b.replication?.state === 'diverged',
      20_000,
      200,
    );
    expect(health.replication).toMatchObject({ state: 'diverged', lagBytes: null, diverged: expect.stringContaining('timeline 1') });

    const dry = await request(api.url).post('/admin/database/promote').set(auth).send({ confirm: 'promote-replica', dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ wouldPromote: false, node: 'primary' });
    expect(dry.body.checks).toContainEqual(
      expect.objectContaining({
        name: 'replica_not_diverged',
        ok: false,
        detail: expect.stringContaining('rebuild primary as a standby of replica'),
      }),
    );
    const real = await request(api.url).post('/admin/database/promote').set(auth).send({ confirm: 'promote-replica' });
    expect(real.status).toBe(412);
    expect(await sql(primary.url(), 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
  }, 120_000);
});
