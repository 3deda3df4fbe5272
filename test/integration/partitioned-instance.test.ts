import request from 'supertest';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startOwnRedis, type OwnRedis } from '../../support/redis-server.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { hasMediaRow } from '../support/media-rows.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

// An instance cut off from Redis never applies read-only mode and keeps writing to the old
// primary; a promotion must still lose none of the writes it acknowledged (the old primary is
// fenced before the catch-up check, so what it holds is what the replica replays).
describe('an instance cut off from Redis during enable → promote → switch', () => {
  let cluster: PgCluster;
  let s3: S3ServerHandle;
  let redis: OwnRedis;
  let proxy: TcpProxy;
  let a: TestInstance;
  let b: TestInstance;

  beforeAll(async () => {
    cluster = await startPgCluster();
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    s3 = await startS3Server({ bucket: 'partitioned' });
    redis = await startOwnRedis();
    proxy = await startTcpProxy(Number(new URL(redis.url).port));
    const env = {
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: cluster.primary.url(),
      DATABASE_REPLICA_URL: cluster.replica.url(),
      HEALTH_TIMEOUT_MS: '500',
      HEALTH_INTERVAL_MS: '300',
    };
    const prefix = uniquePrefix();
    a = await startInstance({ ...env, REDIS_URL: redis.url, INSTANCE_ID: 'part-a' }, prefix);
    b = await startInstance({ ...env, REDIS_URL: `redis://127.0.0.1:${proxy.port}`, INSTANCE_ID: 'part-b' }, prefix);
  }, 60_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await proxy?.close();
    await redis?.stop();
    await s3?.destroy();
    await cluster?.destroy();
  });

  it('every upload the partitioned instance acknowledged is on the promoted node', async () => {
    // The loop runs before and across the partition: b acknowledges writes until its lease runs out
    // (then 503 state_stale), and the enable waits for b until then (listed as stale, not waited for longer).
    let stop = false;
    const acked: string[] = [];
    const loop = (async () => {
      for (let n = 0; !stop; n += 1) {
        const key = `part/loop-${n}`;
        if ((await request(b.url).put(`/media/${key}`).send(Buffer.from(key))).status === 201) acked.push(key);
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    proxy.setMode('refuse');
    await new Promise((r) => setTimeout(r, 500));
    const on = await request(a.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'partition test' });
    expect(on.status).toBe(200);
    expect(on.body.propagation.stale.map((i: { id: string }) => i.id)).toEqual(['part-b']);
    const ackedBeforeAnswer = acked.length;
    const promote = await request(a.url).post('/admin/database/promote').set(auth).send({ confirm: 'promote-replica', maxLagSeconds: 300 });
    expect(promote.status).toBe(200);
    expect(promote.body.oldPrimary).toMatchObject({ fenced: true });
    expect((await request(a.url).post('/admin/database/switch').set(auth).send({ to: 'replica' })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await loop;

    // The partitioned instance did acknowledge writes (else this proves nothing), none after the enable answered ...
    expect(acked.length).toBeGreaterThan(0);
    expect(acked.length).toBe(ackedBeforeAnswer);
    // ... and none of them is missing on the promoted node.
    const missing: string[] = [];
    for (const key of acked) if (!(await hasMediaRow(cluster.replica.url(), key))) missing.push(key);
    expect(missing).toEqual([]);
  }, 60_000);
});
