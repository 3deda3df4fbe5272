import request from 'supertest';
import { hasMediaRow } from '../support/media-rows.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startPartitionWorld, type PartitionWorld } from '../support/world.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

// An instance cut off from Redis never applies read-only mode and keeps writing to the old
// primary; a promotion must still lose none of the writes it acknowledged (the old primary is
// fenced before the catch-up check, so what it holds is what the replica replays).
describe('an instance cut off from Redis during enable → promote → switch', () => {
  let world: PartitionWorld;
  let a: TestInstance;
  let b: TestInstance;

  beforeAll(async () => {
    world = await startPartitionWorld({ bucket: 'partitioned', env: { HEALTH_TIMEOUT_MS: '500', HEALTH_INTERVAL_MS: '300' } });
    a = await world.startDirect({ INSTANCE_ID: 'part-a' });
    b = await world.startProxied({ INSTANCE_ID: 'part-b' });
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
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
    world.proxy.setMode('refuse');
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
    for (const key of acked) if (!(await hasMediaRow(world.cluster.replica.url(), key))) missing.push(key);
    expect(missing).toEqual([]);
  }, 60_000);
});
