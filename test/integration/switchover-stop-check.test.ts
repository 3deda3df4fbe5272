import request from 'supertest';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster, type PgNode } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { query } from '../support/dr-scripts.ts';
import { eventually } from '../../support/common.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const setting = async (node: PgNode, name: string) => (await query<Record<string, string>>(node, `SHOW ${name}`))[0]![name]!;

describe('switchover: the promoted node dies after writes resumed on it, before the old primary is stopped', () => {
  let cluster: PgCluster;
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    cluster = await startPgCluster();
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    s3 = await startS3Server({ bucket: 'stop-check' });
    api = await startInstance(
      {
        ...mediaEnv('PRIMARY', s3),
        DATABASE_URL: cluster.primary.url(),
        DATABASE_REPLICA_URL: cluster.replica.url(),
        HEALTH_TIMEOUT_MS: '500',
        INSTANCE_ID: 'sc-a',
      },
      uniquePrefix(),
    );
  }, 60_000);
  afterAll(async () => {
    await api?.stop();
    await s3?.destroy();
    await cluster?.destroy();
  });

  it('the old primary is not stopped (it stays fenced, running) and the answer is a failure naming stop_old_primary', async () => {
    await eventually(
      () => request(api.url).post('/admin/database/switchover').set(auth).send({ to: 'replica', confirm: 'switchover', dryRun: true }),
      (r) => r.body.wouldSwitch === true,
      15_000,
    );
    api.service.database.switchover.hook = async (step) => {
      if (step === 'stop_old_primary') await cluster.replica.stop('immediate');
    };
    let res;
    try {
      res = await request(api.url).post('/admin/database/switchover').set(auth).send({ to: 'replica', confirm: 'switchover' });
    } finally {
      api.service.database.switchover.hook = undefined;
    }
    expect(res.status).toBe(503);
    expect(res.body.error).toMatchObject({
      code: 'switchover_failed',
      failedStep: 'stop_old_primary',
      rolledBack: false,
      rolledForward: false,
      bytesLost: 0,
    });
    expect(res.body.error.message).toContain('primary was not stopped');
    expect(res.body.error.steps.map((s: { name: string; ok: boolean }) => [s.name, s.ok])).toEqual([
      ['read_only_on', true],
      ['fence_old_primary', true],
      ['wait_for_replay', true],
      ['promote', true],
      ['verify_writes', true],
      ['switch', true],
      ['read_only_off', true],
      ['stop_old_primary', false],
    ]);
    // Still running, still fenced: it lacks what the promoted node acknowledged, so it is not unfenced either.
    expect(await setting(cluster.primary, 'default_transaction_read_only')).toBe('on');
  }, 60_000);
});
