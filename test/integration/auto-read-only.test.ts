import pg from 'pg';
import request from 'supertest';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startClusterWorld, type ClusterWorld } from '../support/world.ts';
import { eventually } from '../../support/common.ts';
import type { PgCluster } from '../../support/pg-cluster.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/** A primary + replica and one instance with automatic read-only on; `auto/before.txt` is stored. */
async function autoReadOnlyWorld(bucket: string): Promise<{ world: ClusterWorld; cluster: PgCluster; api: TestInstance }> {
  const world = await startClusterWorld({
    bucket,
    env: {
      AUTO_READ_ONLY: 'true',
      AUTO_READ_ONLY_FAILURES: '2',
      AUTO_READ_ONLY_RECOVERIES: '2',
      HEALTH_INTERVAL_MS: '150',
      HEALTH_TIMEOUT_MS: '300',
    },
  });
  const api = await world.start();
  const put = await request(api.url).put('/media/auto/before.txt').send('before');
  if (put.status !== 201) {
    await world.destroy();
    throw new Error(`set-up upload refused: ${put.status}`);
  }
  return { world, cluster: world.cluster, api };
}

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

describe('automatic read-only (AUTO_READ_ONLY=true)', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let api: TestInstance;

  beforeAll(async () => {
    ({ world, cluster, api } = await autoReadOnlyWorld('auto-read-only'));
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  });

  const state = async () => (await request(api.url).get('/admin/dr/state').set(auth)).body;

  // Every test starts from normal running: the primary up and healthy, the primary the active
  // target, read-only off. An earlier test may have left the primary stopped or a mode set: the
  // operator's way back (read-only on, switch to the primary, read-only off) restores it.
  beforeEach(async () => {
    if (!(await answers(cluster.primary.url()))) await cluster.primary.start();
    const s = await state();
    if (s.readOnly.enabled || s.database.active !== 'primary') {
      const on = await request(api.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'test set-up' });
      if (on.status !== 200) throw new Error(`set-up: read-only on answered ${on.status}`);
      const sw = await request(api.url).post('/admin/database/switch').set(auth).send({ to: 'primary' });
      if (sw.status !== 200) throw new Error(`set-up: switch to the primary answered ${sw.status}`);
      const off = await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'test set-up done' });
      if (off.status !== 200) throw new Error(`set-up: read-only off answered ${off.status}`);
    }
    await eventually(
      () => request(api.url).get('/health/database'),
      (r) => r.status === 200,
      8000,
    );
  }, 30_000);

  it('when the primary stops answering, turns read-only on and serves reads from the replica; it never promotes', async () => {
    await cluster.primary.stop('fast');
    const s = await eventually(state, (b) => b.readOnly.enabled === true, 5000);
    expect(s).toMatchObject({
      readOnly: { enabled: true, by: 'system:auto-read-only' },
      database: { active: 'replica', by: 'system:auto-read-only' },
    });
    const read = await request(api.url).get('/media/auto/before.txt');
    expect(read.status).toBe(200);
    expect(read.text).toBe('before');
    expect((await request(api.url).put('/media/auto/during.txt').send('x')).status).toBe(503);
    api.service.health.invalidate();
    expect((await request(api.url).get('/health/database')).body).toMatchObject({ target: 'replica', inRecovery: true });
  });

  it('when the primary answers again, switches reads back and lifts the read-only mode it set', async () => {
    await cluster.primary.stop('fast');
    await eventually(state, (b) => b.readOnly.enabled === true && b.readOnly.by === 'system:auto-read-only', 5000);
    await cluster.primary.start();
    const s = await eventually(state, (b) => b.readOnly.enabled === false, 8000);
    expect(s).toMatchObject({ readOnly: { enabled: false, by: 'system:auto-read-only' }, database: { active: 'primary' } });
    // Writes reopen. Right after the primary's restart a first write may still be refused honestly
    // (503 with Retry-After, e.g. a pooled connection the restart ended; one CI run on a busy
    // suite saw it): it must be acknowledged within a few seconds, and a refusal must say so.
    const refusals: string[] = [];
    const after = await eventually(
      async () => {
        const res = await request(api.url).put('/media/auto/after.txt').send('after');
        if (res.status !== 201) {
          refusals.push(`${res.status} ${res.body?.error?.code ?? ''}`);
          expect(res.status).toBe(503);
          expect(res.headers['retry-after']).toBeDefined();
        }
        return res.status;
      },
      (status) => status === 201,
      5000,
      250,
    );
    if (refusals.length > 0) console.log('writes refused before the first was acknowledged:', refusals);
    expect(after).toBe(201);
  });

  it('never lifts a read-only mode an operator set', async () => {
    await cluster.primary.stop('fast');
    await eventually(state, (b) => b.readOnly.enabled === true, 5000);
    expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'operator takes over' })).status).toBe(
      200,
    );
    await cluster.primary.start();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await state()).toMatchObject({ readOnly: { enabled: true, by: 'ops' }, database: { active: 'replica' } });
  });
});

// The promotion cannot be undone: its own primary + replica.
describe('automatic read-only after an operator promotes the replica', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let api: TestInstance;

  beforeAll(async () => {
    ({ world, cluster, api } = await autoReadOnlyWorld('auto-read-only-promote'));
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  });

  const state = async () => (await request(api.url).get('/admin/dr/state').set(auth)).body;

  it('after an operator promotes the replica, never switches back to the returning old primary nor lifts read-only (no split brain)', async () => {
    await cluster.primary.stop('fast');
    await eventually(state, (b) => b.readOnly.enabled === true && b.database.by === 'system:auto-read-only', 5000);
    const promote = await request(api.url)
      .post('/admin/database/promote')
      .set(auth)
      .send({ confirm: 'promote-replica', maxLagSeconds: 3600 });
    expect(promote.status).toBe(200);
    expect(promote.body.promoted).toBe(true);
    await cluster.primary.start();
    // Several recoveries' worth of good probes of the old primary: automatic read-only must not act.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const s = await state();
    expect(s).toMatchObject({
      readOnly: { enabled: true, by: 'system:auto-read-only' },
      database: { active: 'replica', promotedAt: expect.any(String) },
    });
    // The old primary was fenced when it came back: one writable node.
    const metrics = await eventually(
      async () => (await request(api.url).get('/metrics')).text,
      (t) => /^sav3_database_writable_nodes 1$/m.test(t),
      5000,
    );
    expect(metrics).toMatch(/^sav3_database_writable_nodes 1$/m);
  });
});
