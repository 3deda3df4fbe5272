import request from 'supertest';
import { createScratchDatabase, databaseUrl, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { openSse } from '../support/sse-client.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { eventually } from '../../support/common.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

describe('status page, status.json and live events', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let proxy: TcpProxy;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'status-media' });
    db = await createScratchDatabase('sav3_status');
    proxy = await startTcpProxy(5432);
    const url = new URL(databaseUrl(db.name));
    url.port = String(proxy.port);
    api = await startInstance({
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: url.toString(),
      INSTANCE_ID: 'status-1',
      HEALTH_TIMEOUT_MS: '800',
    });
  });
  afterAll(async () => {
    await api?.stop();
    await proxy?.close();
    await s3?.destroy();
    await db?.drop();
  });

  it('shows components, open incidents with public updates only, and never host names or internal notes', async () => {
    const { body: inc } = await request(api.url)
      .post('/admin/incidents')
      .set(op)
      .send({ severity: 'P1', title: 'Media uploads failing', components: ['media-uploads'], summary: 'Uploads fail for some users.' });
    await request(api.url)
      .post(`/admin/incidents/${inc.id}/updates`)
      .set(op)
      .send({ message: 'INTERNAL-NOTE: minio-1.prod.sav3.internal:9000 refuses at 10.0.3.7', visibility: 'internal' });
    await request(api.url)
      .post(`/admin/incidents/${inc.id}/updates`)
      .set(op)
      .send({ message: 'We found the cause on storage-2.example.com:9000 and are fixing it.', visibility: 'public', status: 'identified' });

    const page = await request(api.url).get('/status');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    for (const name of ['API', 'Database', 'Media uploads', 'Media downloads']) expect(page.text).toContain(`<span>${name}`);
    expect(page.text).toContain('Media uploads <span class="meta">(open incident)</span>');
    // Not "all operational" while an incident is open (the probes may also see trouble on a loaded machine).
    expect(page.text).toMatch(/Some systems are (degraded or under investigation|unavailable)/);
    expect(page.text).toContain('Media uploads failing');
    expect(page.text).toContain('Uploads fail for some users.');
    expect(page.text).toContain('We found the cause on [host] and are fixing it.');
    expect(page.text).not.toMatch(/INTERNAL-NOTE|minio-1|10\.0\.3\.7|storage-2|example\.com|127\.0\.0\.1|localhost/);
    expect(page.text).not.toContain('<script>');

    const json = await request(api.url).get('/status.json');
    expect(json.status).toBe(200);
    expect(json.body.components.map((c: { id: string }) => c.id)).toEqual(['api', 'database', 'media-uploads', 'media-downloads']);
    const shown = json.body.incidents.find((i: { id: string }) => i.id === inc.id);
    expect(shown.updates.map((u: { message: string }) => u.message)).toEqual([
      'We found the cause on [host] and are fixing it.',
      'Uploads fail for some users.',
    ]);
    expect(JSON.stringify(json.body)).not.toMatch(/INTERNAL-NOTE|createdBy|"ops"|acknowledgedBy|error/);
    expect(json.body.components.find((c: { id: string }) => c.id === 'media-uploads').incidents).toEqual([inc.id]);
    expect(json.body.history).toHaveLength(4);
    expect(json.body.history[0].days).toHaveLength(90);
    await request(api.url)
      .post(`/admin/incidents/${inc.id}/updates`)
      .set(op)
      .send({ message: 'Fixed.', visibility: 'public', status: 'resolved' });
    expect((await request(api.url).get('/status.json')).body.incidents.some((i: { id: string }) => i.id === inc.id)).toBe(false);
  });

  it('streams a newly opened incident to /status/events and /admin/events within 2 s', async () => {
    const status = await openSse(`${api.url}/status/events`);
    const admin = await openSse(`${api.url}/admin/events`, viewer);
    expect([status.status, admin.status]).toEqual([200, 200]);
    expect(status.headers['content-type']).toMatch(/^text\/event-stream/);
    await status.next((e) => e.event === 'status');
    const started = Date.now();
    const { body: inc } = await request(api.url)
      .post('/admin/incidents')
      .set(op)
      .send({ severity: 'P2', title: 'Live one', components: ['api'], summary: 'live' });
    const seen = await status.next(
      (e) => e.event === 'status' && (e.data as { incidents: { id: string }[] }).incidents?.some((i) => i.id === inc.id),
      2000,
    );
    expect(seen.at - started).toBeLessThan(2000);
    const opened = await admin.next((e) => e.event === 'incident.opened', 2000);
    expect(opened.data).toMatchObject({ type: 'incident.opened', incidentId: inc.id });
    // An audited DR action while the incident is open reaches operators as a timeline event and a DR state change.
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: true, reason: 'live test' });
    await admin.next(
      (e) => e.event === 'dr.state' && (e.data as { data: { readOnly: { enabled: boolean } } }).data.readOnly.enabled === true,
      3000,
    );
    await admin.next((e) => e.event === 'incident.timeline' && (e.data as { incidentId: string }).incidentId === inc.id, 3000);
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: false, reason: 'done' });
    await request(api.url)
      .post(`/admin/incidents/${inc.id}/updates`)
      .set(op)
      .send({ message: 'Fixed.', visibility: 'public', status: 'resolved' });
    await admin.next((e) => e.event === 'incident.updated' && (e.data as { incidentId: string }).incidentId === inc.id, 2000);
    status.close();
    admin.close();

    const anonymous = await request(api.url).get('/admin/events');
    expect(anonymous.status).toBe(401);
    expect((await request(api.url).get('/admin/events?incidentId=bogus').set(viewer)).status).toBe(400);
  });

  it('while PostgreSQL is down or hangs, the page still answers 200 quickly and says the state is unknown; the outage enters the history', async () => {
    // Start from a database every probe sees up (a loaded machine can make a probe time out).
    await eventually(
      () => request(api.url).get('/status.json'),
      (r) => r.body.components[1].state === 'operational',
      10_000,
    );
    // …and give the transition watcher (one health period) time to see it too.
    await new Promise((r) => setTimeout(r, 1500));
    const admin = await openSse(`${api.url}/admin/events`, viewer);
    for (const mode of ['refuse', 'hang'] as const) {
      proxy.setMode(mode);
      const page = await eventually(
        async () => {
          const t0 = Date.now();
          const res = await request(api.url).get('/status');
          expect(res.status).toBe(200);
          expect(Date.now() - t0).toBeLessThan(2500);
          return res;
        },
        (r) => r.text.includes('Incident information is unavailable'),
        5000,
      );
      expect(page.text).toContain('Incident information is unavailable right now: the state is unknown.');
      expect(page.text).not.toMatch(/ECONNREFUSED|timeout|127\.0\.0\.1|5432/);
      const json = await request(api.url).get('/status.json');
      expect(json.status).toBe(200);
      expect(json.body.incidents).toBeNull();
      expect(json.body.history).toBeNull();
      const db = await eventually(
        () => request(api.url).get('/status.json'),
        (r) => r.body.components[1].state === 'outage',
        5000,
      );
      expect(db.body.components.find((c: { id: string }) => c.id === 'database').state).toBe('outage');
    }
    // The incident API says PostgreSQL is unavailable (503), never a 500.
    const list = await request(api.url).get('/admin/incidents').set(op);
    expect(list.status).toBe(503);
    expect(list.body.error).toMatchObject({ code: 'dependency_unavailable', dependency: 'database' });
    expect(
      (
        await request(api.url)
          .post('/admin/incidents')
          .set(op)
          .send({ severity: 'P0', title: 'db', components: ['database'], summary: 'down' })
      ).status,
    ).toBe(503);
    await admin.next((e) => e.event === 'health.transition' && JSON.stringify(e.data).includes('"outage"'), 5000);
    admin.close();
    proxy.setMode('pass');
    // The changes seen while PostgreSQL was down were kept and are written once it is back.
    const todayOf = (r: request.Response) => r.body.history?.find((h: { id: string }) => h.id === 'database').days.at(-1);
    const back = await eventually(
      () => request(api.url).get('/status.json'),
      (r) => r.body.components[1].state === 'operational' && todayOf(r)?.state === 'outage',
      10_000,
    );
    expect(todayOf(back).state).toBe('outage');
    expect(back.body.incidents).not.toBeNull();
  });
});
