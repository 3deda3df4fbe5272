import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { openSse } from '../support/sse-client.ts';
import {
  mediaEnv,
  OPERATOR_TOKEN,
  ownDatabase,
  startInstance,
  uniquePrefix,
  VIEWER_TOKEN,
  type TestInstance,
} from '../support/instance.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

describe('GET /admin/events across two instances', () => {
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let a: TestInstance;
  let b: TestInstance;
  // The sync copies what the metadata lists: a database of its own, so it sees only this test's uploads.
  let db: Awaited<ReturnType<typeof ownDatabase>>;

  beforeAll(async () => {
    db = await ownDatabase();
    primary = await startS3Server({ bucket: 'events-primary' });
    backup = await startS3Server({ bucket: 'events-backup' });
    const env = { DATABASE_URL: db.url, ...mediaEnv('PRIMARY', primary), ...mediaEnv('BACKUP', backup), MEDIA_SYNC_INLINE_MAX: '0' };
    const prefix = uniquePrefix();
    a = await startInstance({ ...env, INSTANCE_ID: 'events-a' }, prefix);
    b = await startInstance({ ...env, INSTANCE_ID: 'events-b' }, prefix);
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await primary?.destroy();
    await backup?.destroy();
    await db?.drop();
  });

  it('a viewer following instance B sees job progress, DR state and incidents started on instance A', async () => {
    const events = await openSse(`${b.url}/admin/events`, viewer);
    await events.next((e) => e.event === 'hello');
    for (const key of ['events/one.txt', 'events/two.txt', 'events/three.txt']) {
      expect((await request(a.url).put(`/media/${key}`).set('Content-Type', 'text/plain').send(`body of ${key}`)).status).toBe(201);
    }
    const sync = await request(a.url).post('/admin/media/sync').set(op).send({ from: 'primary', to: 'backup' });
    expect(sync.status).toBe(202);
    // The stream is under test, not the copy: wait for the job's end, whichever it is.
    const done = await events.next(
      (e) => e.event === 'job.progress' && (e.data as { data: { status: string } }).data.status !== 'running',
      15_000,
    );
    expect(done.data).toMatchObject({ type: 'job.progress', instanceId: 'events-a', data: { id: sync.body.job.id, toCopy: 3 } });
    expect(events.events.filter((e) => e.event === 'job.progress').length).toBeGreaterThanOrEqual(2);

    // force: the canary checks may time out on a loaded machine; the event is what is tested here.
    expect((await request(a.url).post('/admin/media/switch').set(op).send({ to: 'backup', force: true })).status).toBe(200);
    await events.next(
      (e) => e.event === 'dr.state' && (e.data as { data: { media: { active: string } } }).data.media.active === 'backup',
      5000,
    );
    expect((await request(a.url).post('/admin/media/switch').set(op).send({ to: 'primary', force: true })).status).toBe(200);

    const { body: inc } = await request(a.url)
      .post('/admin/incidents')
      .set(op)
      .send({ severity: 'P2', title: 'Events', components: [], summary: 'events' });
    const opened = await events.next((e) => e.event === 'incident.opened', 3000);
    expect(opened.data).toMatchObject({ incidentId: inc.id });
    events.close();
    await request(a.url)
      .post(`/admin/incidents/${inc.id}/updates`)
      .set(op)
      .send({ message: 'done', visibility: 'public', status: 'resolved' });
  });

  it('with ?incidentId= it streams that incident only (plus DR events)', async () => {
    const create = async (title: string) =>
      (await request(a.url).post('/admin/incidents').set(op).send({ severity: 'P3', title, components: [], summary: title })).body
        .id as string;
    const mine = await create('mine');
    const events = await openSse(`${b.url}/admin/events?incidentId=${mine}`, viewer);
    await events.next((e) => e.event === 'hello');
    const other = await create('other');
    await request(a.url).post(`/admin/incidents/${other}/updates`).set(op).send({ message: 'other news', visibility: 'public' });
    await request(a.url).post(`/admin/incidents/${mine}/updates`).set(op).send({ message: 'my news', visibility: 'public' });
    await events.next((e) => e.event === 'incident.updated', 3000);
    await new Promise((r) => setTimeout(r, 300));
    const ids = events.events.filter((e) => e.event.startsWith('incident.')).map((e) => (e.data as { incidentId: string }).incidentId);
    expect(ids).toEqual([mine]);
    events.close();
    for (const id of [mine, other])
      await request(a.url)
        .post(`/admin/incidents/${id}/updates`)
        .set(op)
        .send({ message: 'done', visibility: 'public', status: 'resolved' });
  });

  it('shutdown ends open event streams at once instead of waiting for them to drain', async () => {
    const admin = await openSse(`${b.url}/admin/events`, viewer);
    const status = await openSse(`${b.url}/status/events`);
    await admin.next((e) => e.event === 'hello');
    await status.next((e) => e.event === 'status');
    const started = Date.now();
    await b.stop();
    // SHUTDOWN_TIMEOUT_MS is 2000 in the tests: a stream left open would hold the stop that long.
    expect(Date.now() - started).toBeLessThan(1500);
    admin.close();
    status.close();
  });
});
