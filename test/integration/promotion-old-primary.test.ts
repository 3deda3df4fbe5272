import pg from 'pg';
import request from 'supertest';
import { eventually } from '../../support/common.ts';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/**
 * A planned promotion does its work on the old primary on one connection (restore point, fence,
 * the WAL position the catch-up waits for) and watches pg_promote's end itself: each of those must
 * still happen, in that order, and the old primary must hold nothing the promoted node lacks.
 */
describe('a planned promotion with the old primary up', () => {
  let cluster: PgCluster;
  let s3: S3ServerHandle;
  let instance: TestInstance;

  beforeAll(async () => {
    cluster = await startPgCluster({ synchronous: true });
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    s3 = await startS3Server({ bucket: 'old-primary' });
    instance = await startInstance({
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: cluster.primary.url(),
      DATABASE_REPLICA_URL: cluster.replica.url(),
      HEALTH_TIMEOUT_MS: '2000',
      HEALTH_INTERVAL_MS: '500',
    });
  }, 60_000);
  afterAll(async () => {
    await instance?.stop();
    await s3?.destroy();
    await cluster?.destroy();
  });

  it('names a restore point on it, fences it, waits for the replica to replay its WAL, promotes the replica and opens the pool to it', async () => {
    expect((await request(instance.url).put('/media/old-primary/before').send(Buffer.from('kept'))).status).toBe(201);
    expect((await request(instance.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'planned' })).status).toBe(200);
    // A session on the old primary that the fence must end.
    const session = new pg.Client({ connectionString: cluster.primary.url() });
    session.on('error', () => undefined);
    await session.connect();

    const promote = await request(instance.url)
      .post('/admin/database/promote')
      .set(auth)
      .send({ confirm: 'promote-replica', maxLagSeconds: 3600 });
    expect(promote.status).toBe(200);
    expect(promote.body).toMatchObject({
      promoted: true,
      node: 'replica',
      restorePoint: { name: expect.stringMatching(/^before-promote-/), lsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/) },
      oldPrimary: { fenced: true, detail: expect.stringMatching(/sessions ended/) },
      catchUp: { primaryLsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/) },
    });
    // The fence ended the other sessions on the old primary.
    await expect(session.query('SELECT 1')).rejects.toThrow();

    const promoted = new pg.Client({ connectionString: cluster.replica.url() });
    await promoted.connect();
    try {
      // The request pool to the promoted node is open before the switch to it (nothing uses it yet).
      const pool = await eventually(
        async () =>
          (await promoted.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sav3-api'"))
            .rows[0]!.n,
        (n) => n > 0,
        3000,
        50,
      );
      expect(pool).toBeGreaterThan(0);
      const { rows } = await promoted.query<{ in_recovery: boolean; kept: string }>(
        `SELECT pg_is_in_recovery() AS in_recovery, (SELECT count(*) FROM media_objects WHERE key = 'old-primary/before')::text AS kept`,
      );
      expect(rows[0]).toMatchObject({ in_recovery: false, kept: '1' });
    } finally {
      await promoted.end();
    }
    const old = new pg.Client({ connectionString: cluster.primary.url() });
    await old.connect();
    try {
      const { rows } = await old.query<{ ro: string }>("SELECT current_setting('default_transaction_read_only') AS ro");
      expect(rows[0]!.ro).toBe('on');
    } finally {
      await old.end();
    }
  }, 60_000);
});
