import request from 'supertest';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { eventually } from '../../support/common.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };
const today = () => new Date().toISOString().slice(0, 10).replaceAll('-', '');

describe('incidents: records, states, roles, timeline and post-mortem', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'incident-media' });
    db = await createScratchDatabase('sav3_incidents');
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), DATABASE_URL: db.url, INSTANCE_ID: 'api-inc' });
  });
  afterAll(async () => {
    await api?.stop();
    await s3?.destroy();
    await db?.drop();
  });

  const create = (body: object, auth = op) => request(api.url).post('/admin/incidents').set(auth).send(body);
  const update = (id: string, body: object) => request(api.url).post(`/admin/incidents/${id}/updates`).set(op).send(body);

  it('opens incidents with ids INC-YYYYMMDD-N counting up within the day, acknowledged by the operator', async () => {
    const a = await create({
      severity: 'P1',
      title: 'Uploads failing',
      components: ['media-uploads'],
      summary: 'uploads fail with errors',
    });
    expect(a.status).toBe(201);
    expect(a.body).toMatchObject({
      severity: 'P1',
      status: 'investigating',
      components: ['media-uploads'],
      createdBy: 'ops',
      acknowledgedBy: 'ops',
      responseTargetSeconds: 3600,
      responseTargetMet: true,
    });
    expect(a.body.id).toMatch(new RegExp(`^INC-${today()}-\\d+$`));
    const b = await create({ severity: 'P3', title: 'Log warnings', components: [], summary: 'noisy logs' });
    const n = (id: string) => Number(id.split('-')[2]);
    expect(n(b.body.id)).toBe(n(a.body.id) + 1);
    // Clean up: resolve both so later tests see only their own open incidents.
    for (const id of [a.body.id, b.body.id])
      expect((await update(id, { message: 'done', visibility: 'public', status: 'resolved' })).status).toBe(201);
  });

  it('ten incidents opened at once get ten distinct consecutive numbers', async () => {
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => create({ severity: 'P3', title: `race ${i}`, components: [], summary: 'race' })),
    );
    const ids = results.map((r) => r.body.id as string);
    expect(results.every((r) => r.status === 201)).toBe(true);
    const numbers = ids.map((id) => Number(id.split('-')[2])).sort((x, y) => x - y);
    expect(new Set(numbers).size).toBe(10);
    expect(numbers[9]! - numbers[0]!).toBe(9);
    await Promise.all(ids.map((id) => update(id, { message: 'race over', visibility: 'public', status: 'resolved' })));
  });

  it('refuses bad input with 400 per field, unknown ids with 404, a viewer with 403', async () => {
    const bad = await create({ severity: 'P5', title: '', components: ['disk'], summary: 'x', extra: 1 });
    expect(bad.status).toBe(400);
    expect(Object.keys(bad.body.error.details).sort()).toEqual(['components.0', 'extra', 'severity', 'title']);
    expect((await create({ severity: 'P0', title: 't', components: ['api', 'api'], summary: 's' })).status).toBe(400);
    expect((await create({ severity: 'P0', title: 't', components: [], summary: 's' }, viewer)).status).toBe(403);
    expect((await request(api.url).post('/admin/incidents').send({})).status).toBe(401);
    expect((await request(api.url).get('/admin/incidents/INC-20200101-999').set(op)).status).toBe(404);
    expect((await request(api.url).get('/admin/incidents/nonsense').set(op)).status).toBe(404);
    expect((await update('INC-20200101-999', { message: 'x', visibility: 'public' })).status).toBe(404);
    expect((await request(api.url).get('/admin/incidents/INC-20200101-999/postmortem').set(op)).status).toBe(404);
    expect((await request(api.url).get('/admin/incidents?status=closed').set(op)).status).toBe(400);
    expect((await request(api.url).get('/admin/incidents?status=resolved').set(viewer)).status).toBe(200);
  });

  it('takes roles at creation (token names only), components default to none, updates default to public, list takes a limit', async () => {
    const before = (await request(api.url).get('/admin/incidents?status=&limit=1000').set(op)).body.incidents.length;
    const unknown = await create({ severity: 'P2', title: 'r', summary: 's', roles: { incident_commander: 'nobody' } });
    expect(unknown.status).toBe(400);
    expect(Object.keys(unknown.body.error.details)).toEqual(['roles.incident_commander']);
    expect((await request(api.url).get('/admin/incidents?limit=1000').set(op)).body.incidents.length).toBe(before);
    const ok = await create({ severity: 'P2', title: 'With team', summary: 's', roles: { incident_commander: 'ops' } });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ components: [], roles: { incident_commander: 'ops' } });
    expect(ok.body.initialNotification).toContain('Response Team: Incident Commander: ops');
    const upd = await update(ok.body.id, { message: 'news for everyone' });
    expect(upd.status).toBe(201);
    const full = await request(api.url).get(`/admin/incidents/${ok.body.id}`).set(op);
    expect(full.body.timeline.find((e: { message: string }) => e.message === 'news for everyone').visibility).toBe('public');
    expect((await request(api.url).get('/admin/incidents?limit=1').set(op)).body.incidents).toHaveLength(1);
    expect((await request(api.url).get('/admin/incidents?limit=0').set(op)).status).toBe(400);
    await update(ok.body.id, { message: 'done', status: 'resolved' });
  });

  it('moves through the states; a resolved incident and a repeated state are 409, and a refusal changes nothing', async () => {
    const { body: inc } = await create({
      severity: 'P2',
      title: 'Replica lagging',
      components: ['database'],
      summary: 'replica lag above 30 s',
    });
    const same = await update(inc.id, { message: 'still', visibility: 'public', status: 'investigating' });
    expect(same.status).toBe(409);
    expect((await update(inc.id, { message: 'found it', visibility: 'public', status: 'identified' })).body.status).toBe('identified');
    const mon = await update(inc.id, { message: 'fix deployed', visibility: 'public', status: 'monitoring' });
    expect(mon.body).toMatchObject({ status: 'monitoring' });
    expect(mon.body.mitigatedAt).not.toBeNull();
    expect((await update(inc.id, { message: 'note', visibility: 'internal' })).status).toBe(201);
    expect((await update(inc.id, { message: 'internal resolve', visibility: 'internal', status: 'resolved' })).status).toBe(400);
    const res = await update(inc.id, { message: 'all good', visibility: 'public', status: 'resolved', rootCause: 'a long-running query' });
    expect(res.body).toMatchObject({ status: 'resolved', rootCause: 'a long-running query', nextUpdateDueAt: null });
    for (const status of ['investigating', 'identified', 'monitoring', 'resolved']) {
      expect((await update(inc.id, { message: 'again', visibility: 'public', status })).status).toBe(409);
    }
    expect((await update(inc.id, { message: 'late note', visibility: 'internal' })).status).toBe(409);
    const full = await request(api.url).get(`/admin/incidents/${inc.id}`).set(viewer);
    expect(full.body.timeline.filter((e: { kind: string }) => e.kind === 'status').map((e: { status: string }) => e.status)).toEqual([
      'identified',
      'monitoring',
      'resolved',
    ]);
    const listed = await request(api.url).get('/admin/incidents?status=resolved').set(viewer);
    expect(listed.body.incidents.map((i: { id: string }) => i.id)).toContain(inc.id);
    expect(
      (await request(api.url).get('/admin/incidents?status=open').set(viewer)).body.incidents.map((i: { id: string }) => i.id),
    ).not.toContain(inc.id);
  });

  it('two operators resolving at once: one wins, the other gets 409, one resolution entry', async () => {
    const { body: inc } = await create({ severity: 'P3', title: 'Race', components: [], summary: 'race' });
    const results = await Promise.all(
      [0, 1, 2].map((i) => update(inc.id, { message: `resolve ${i}`, visibility: 'public', status: 'resolved' })),
    );
    expect(results.map((r) => r.status).sort()).toEqual([201, 409, 409]);
    const full = await request(api.url).get(`/admin/incidents/${inc.id}`).set(op);
    expect(full.body.timeline.filter((e: { status: string; kind: string }) => e.kind === 'status')).toHaveLength(1);
  });

  it('assigns the runbook roles to admin token names only', async () => {
    const { body: inc } = await create({ severity: 'P1', title: 'Roles', components: [], summary: 'roles' });
    const ok = await request(api.url)
      .put(`/admin/incidents/${inc.id}/roles`)
      .set(op)
      .send({ incident_commander: 'ops', communications_lead: 'watch' });
    expect(ok.status).toBe(200);
    expect(ok.body.roles).toEqual({ incident_commander: 'ops', communications_lead: 'watch' });
    const unknown = await request(api.url).put(`/admin/incidents/${inc.id}/roles`).set(op).send({ database_administrator: 'mallory' });
    expect(unknown.status).toBe(400);
    expect(Object.keys(unknown.body.error.details)).toEqual(['roles.database_administrator']);
    expect((await request(api.url).put(`/admin/incidents/${inc.id}/roles`).set(op).send({ janitor: 'ops' })).status).toBe(400);
    expect((await request(api.url).put(`/admin/incidents/${inc.id}/roles`).set(op).send({})).status).toBe(400);
    await update(inc.id, { message: 'done', visibility: 'public', status: 'resolved' });
  });

  it('DR actions taken while an incident is open join its timeline with their durations; earlier and later ones do not', async () => {
    const before = await request(api.url).put('/admin/read-only').set(op).send({ enabled: true, reason: 'before the incident' });
    expect(before.status).toBe(200);
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: false, reason: 'still before' });
    const { body: inc } = await create({
      severity: 'P0',
      title: 'Database unavailable',
      components: ['database', 'api'],
      summary: 'the primary database does not answer',
    });
    expect((await request(api.url).put('/admin/read-only').set(op).send({ enabled: true, reason: 'protect data' })).status).toBe(200);
    // Refused operations (no replica, no backup configured) are audited and join the timeline too.
    expect((await request(api.url).post('/admin/media/switch').set(op).send({ to: 'backup' })).status).toBeGreaterThanOrEqual(400);
    expect(
      (await request(api.url).post('/admin/media/sync').set(op).send({ from: 'primary', to: 'backup' })).status,
    ).toBeGreaterThanOrEqual(400);
    expect(
      (await request(api.url).post('/admin/database/promote').set(op).send({ confirm: 'promote-replica' })).status,
    ).toBeGreaterThanOrEqual(400);
    expect((await request(api.url).post('/admin/database/switch').set(op).send({ to: 'replica' })).status).toBeGreaterThanOrEqual(400);
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: false, reason: 'recovered' });
    await update(inc.id, { message: 'recovered', visibility: 'public', status: 'resolved', rootCause: 'disk full' });
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: true, reason: 'after the incident' });
    await request(api.url).put('/admin/read-only').set(op).send({ enabled: false, reason: 'after' });

    const full = await request(api.url).get(`/admin/incidents/${inc.id}`).set(op);
    const actions = full.body.timeline.filter((e: { kind: string }) => e.kind === 'dr_action');
    expect(actions.map((a: { detail: { action: string; result: string } }) => `${a.detail.action}:${a.detail.result}`)).toEqual([
      'read_only.set:success',
      'media.switch:refused',
      'media.sync:refused',
      'database.promote:refused',
      'database.switch:refused',
      'read_only.set:success',
    ]);
    for (const a of actions) {
      expect(typeof a.durationMs).toBe('number');
      expect(a.visibility).toBe('internal');
    }
    expect(actions[0].detail.after).toMatchObject({ enabled: true, reason: 'protect data' });

    const pm = await request(api.url).get(`/admin/incidents/${inc.id}/postmortem`).set(viewer);
    expect(pm.status).toBe(200);
    expect(pm.headers['content-type']).toMatch(/text\/markdown/);
    for (const heading of ['## Timeline (UTC)', '## DR actions', '## Recovery objectives', '## Root cause', '## Follow-ups'])
      expect(pm.text).toContain(heading);
    expect(pm.text).toMatch(/Time to detect:\*\* 0 s/);
    expect(pm.text).toMatch(/Time to acknowledge:\*\* 0 s \(target 15 min 0 s: met\)/);
    expect(pm.text).toMatch(/Database RTO:\*\* \d+ s \(target 15 min 0 s: met\)/);
    expect(pm.text).toContain('| read_only.set | success | ops |');
    expect(pm.text).toContain('| media.switch | refused | ops |');
    expect(pm.text).toContain('disk full');
    expect(pm.text).not.toContain('before the incident');
  });

  it('exports open incidents by severity and the age of unacknowledged ones', async () => {
    const { body: inc } = await create({ severity: 'P2', title: 'Metrics', components: [], summary: 'metrics' });
    const metrics = await eventually(
      () => request(api.url).get('/metrics'),
      (r) => /sav3_incidents_open\{severity="P2"\} 1\b/.test(r.text),
      5000,
    );
    expect(metrics.text).toMatch(/sav3_incident_response_target_seconds\{severity="P0"\} 900\b/);
    expect(metrics.text).toMatch(/sav3_incident_unacknowledged_seconds\{severity="P2"\} 0\b/);
    await update(inc.id, { message: 'done', visibility: 'public', status: 'resolved' });
    await eventually(
      () => request(api.url).get('/metrics'),
      (r) => /sav3_incidents_open\{severity="P2"\} 0\b/.test(r.text),
      5000,
    );
  });
});
