import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startAlertmanager, type Alertmanager } from '../support/alertmanager.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';
import { eventually } from '../../support/common.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const WEBHOOK_TOKEN = 'alertmanager-webhook-token-0123456789';

function payload(alerts: object[], groupKey = '{}:{alertname="Direct"}') {
  return {
    version: '4',
    groupKey,
    status: 'firing',
    receiver: 'sav3',
    groupLabels: {},
    commonLabels: {},
    commonAnnotations: {},
    externalURL: 'http://am',
    truncatedAlerts: 0,
    alerts,
  };
}
const firing = (labels: Record<string, string>, startsAt = new Date().toISOString()) => ({
  status: 'firing',
  labels,
  annotations: {},
  startsAt,
  endsAt: '0001-01-01T00:00:00Z',
  generatorURL: '',
  fingerprint: '',
});

describe('Alertmanager webhook: a real Alertmanager opens, joins and updates incidents', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let api: TestInstance;
  let am: Alertmanager;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'am-media' });
    db = await createScratchDatabase('sav3_alerts');
    const secrets = await mkdtemp(join(tmpdir(), 'sav3-secret-'));
    await writeFile(join(secrets, 'token'), `${WEBHOOK_TOKEN}\n`);
    api = await startInstance({
      ...mediaEnv('PRIMARY', s3),
      DATABASE_URL: db.url,
      ALERTMANAGER_WEBHOOK_TOKEN_FILE: join(secrets, 'token'),
    });
    const hook = `${api.url}/admin/incidents/alerts`;
    am = await startAlertmanager(
      () => `
route:
  receiver: sav3
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
  routes:
    - matchers: ['route="wrong-token"']
      receiver: wrong-token
receivers:
  - name: sav3
    webhook_configs:
      - url: ${hook}
        send_resolved: true
        http_config:
          authorization:
            credentials_file: ${join(secrets, 'token')}
  - name: wrong-token
    webhook_configs:
      - url: ${hook}
        send_resolved: true
        http_config:
          authorization:
            credentials: not-the-token-at-all-0123456789
`,
    );
    void am.dir;
  });
  afterAll(async () => {
    await am?.stop();
    await api?.stop();
    await s3?.destroy();
    await db?.drop();
  });

  const openIncidents = async () =>
    (await request(api.url).get('/admin/incidents?status=open').set(op)).body.incidents as {
      id: string;
      title: string;
      severity: string;
      source: string;
      components: string[];
      acknowledgedAt: string | null;
    }[];
  const timeline = async (id: string) =>
    (await request(api.url).get(`/admin/incidents/${id}`).set(op)).body.timeline as {
      kind: string;
      visibility: string;
      message: string;
      detail: { fingerprint?: string };
    }[];

  it('a firing alert opens one incident (severity from its label), retries do not duplicate it, a second alert of the group joins it, resolution adds an update', async () => {
    await am.alert(
      { alertname: 'DatabaseDown', severity: 'critical', job: 'postgres', instance: 'db1.internal:5432' },
      { annotations: { summary: 'Database is down (db1.internal:5432)' } },
    );
    const [incident] = await eventually(openIncidents, (l) => l.some((i) => i.title === 'Alert: DatabaseDown'), 10_000);
    expect(incident).toMatchObject({
      title: 'Alert: DatabaseDown',
      severity: 'P0',
      source: 'alertmanager',
      components: ['database'],
      acknowledgedAt: null,
    });

    // repeat_interval 2s: Alertmanager re-sends the group; every re-send is a duplicate.
    const sentBefore = await am.metric('alertmanager_notifications_total{integration="webhook"}');
    await eventually(
      () => am.metric('alertmanager_notifications_total{integration="webhook"}'),
      (n) => n >= sentBefore + 1,
      10_000,
    );
    await am.alert({ alertname: 'DatabaseDown', severity: 'critical', job: 'postgres', instance: 'db2.internal:5432' });
    await eventually(
      () => timeline(incident!.id),
      (t) => t.filter((e) => e.kind === 'alert').length >= 2,
      10_000,
    );
    await new Promise((r) => setTimeout(r, 2500));
    const entries = (await timeline(incident!.id)).filter((e) => e.kind === 'alert');
    expect(entries).toHaveLength(2);
    expect(new Set(entries.map((e) => e.detail.fingerprint)).size).toBe(2);
    expect(entries.every((e) => e.visibility === 'internal')).toBe(true);
    expect((await openIncidents()).filter((i) => i.title === 'Alert: DatabaseDown')).toHaveLength(1);

    const metrics = await request(api.url).get('/metrics');
    expect(metrics.text).toMatch(/sav3_incidents_open\{severity="P0"\} 1\b/);
    expect(metrics.text).toMatch(/sav3_incident_unacknowledged_seconds\{severity="P0"\} \d/);

    await am.alert(
      { alertname: 'DatabaseDown', severity: 'critical', job: 'postgres', instance: 'db1.internal:5432' },
      { end: new Date(Date.now() - 1000) },
    );
    await eventually(
      () => timeline(incident!.id),
      (t) => t.some((e) => e.message === 'Monitoring reports that DatabaseDown has recovered.'),
      10_000,
    );
    const page = await eventually(
      () => request(api.url).get('/status'),
      (r) => r.text.includes('Alert: DatabaseDown'),
      5000,
    );
    expect(page.text).toContain('Alert: DatabaseDown');
    expect(page.text).toContain('Monitoring reports that DatabaseDown has recovered.');
    expect(page.text).not.toMatch(/db1|db2|internal:5432|Database is down \(/);
  });

  it('a delivery with the wrong token is refused (401) and opens nothing', async () => {
    const failedBefore = await am.metric('alertmanager_notifications_failed_total{integration="webhook"}');
    await am.alert({ alertname: 'MediaStorageDown', severity: 'high', route: 'wrong-token' });
    await eventually(
      () => am.metric('alertmanager_notifications_failed_total{integration="webhook"}'),
      (n) => n > failedBefore,
      15_000,
    );
    expect((await openIncidents()).some((i) => i.title === 'Alert: MediaStorageDown')).toBe(false);
    expect(api.logs()).toContain('alert webhook: authentication failed');
    expect(api.logs()).not.toContain('not-the-token-at-all');
  });

  it('refuses missing or wrong tokens (401), malformed, wrong-version and oversized payloads (400), and creates nothing', async () => {
    const post = () => request(api.url).post('/admin/incidents/alerts');
    const body = payload([firing({ alertname: 'Direct', severity: 'warning' })]);
    expect((await post().send(body)).status).toBe(401);
    expect(
      (
        await post()
          .set({ Authorization: `Bearer ${OPERATOR_TOKEN}` })
          .send(body)
      ).status,
    ).toBe(401);
    expect(
      (
        await post()
          .set({ Authorization: `Bearer ${WEBHOOK_TOKEN}x` })
          .send(body)
      ).status,
    ).toBe(401);
    const auth = { Authorization: `Bearer ${WEBHOOK_TOKEN}` };
    expect((await post().set(auth).set('Content-Type', 'application/json').send('{"version":')).status).toBe(400);
    expect(
      (
        await post()
          .set(auth)
          .send({ ...body, version: '3' })
      ).status,
    ).toBe(400);
    expect(
      (
        await post()
          .set(auth)
          .send({ ...body, alerts: [] })
      ).status,
    ).toBe(400);
    expect(
      (
        await post()
          .set(auth)
          .send({ ...body, alerts: [{ status: 'firing', labels: {}, startsAt: 'yesterday' }] })
      ).status,
    ).toBe(400);
    const huge = payload(Array.from({ length: 400 }, (_, i) => firing({ alertname: 'Direct', pad: 'x'.repeat(1000), n: String(i) })));
    const big = await post().set(auth).send(huge);
    expect(big.status).toBe(400);
    expect(big.body.error.code).toBe('bad_request');
    expect((await openIncidents()).some((i) => i.title === 'Alert: Direct')).toBe(false);

    // The same payload delivered twice at once (two instances, or a retry) opens one incident.
    const once = payload([firing({ alertname: 'Direct', severity: 'P2' }, '2026-01-01T00:00:00Z')], '{}:{alertname="Twice"}');
    const [r1, r2] = await Promise.all([post().set(auth).send(once), post().set(auth).send(once)]);
    expect([r1.status, r2.status]).toEqual([200, 200]);
    expect(r1.body.incidents).toEqual(r2.body.incidents);
    expect(r1.body.opened + r2.body.opened).toBe(1);
    expect(r1.body.duplicates + r2.body.duplicates).toBe(1);
    const id = r1.body.incidents[0] as string;

    // Acknowledging stops the clock the response-time alert watches; a second acknowledgement changes nothing.
    const ack = await request(api.url).post(`/admin/incidents/${id}/acknowledge`).set(op);
    expect(ack.status).toBe(200);
    expect(ack.body).toMatchObject({ acknowledgedBy: 'ops', responseTargetMet: true });
    const again = await request(api.url).post(`/admin/incidents/${id}/acknowledge`).set(op);
    expect(again.body.acknowledgedAt).toBe(ack.body.acknowledgedAt);
    await eventually(
      () => request(api.url).get('/metrics'),
      (r) => /sav3_incident_unacknowledged_seconds\{severity="P2"\} 0\b/.test(r.text),
      5000,
    );

    // Resolved by people while the alert still fires: Alertmanager's next re-send reopens nothing…
    await request(api.url)
      .post(`/admin/incidents/${id}/updates`)
      .set(op)
      .send({ message: 'fixed by hand', visibility: 'public', status: 'resolved' });
    const resent = await post().set(auth).send(once);
    expect(resent.body).toMatchObject({ incidents: [id], opened: 0, duplicates: 1 });
    // A worse alert joining a group raises the incident's severity.
    const group = '{}:{alertname="Escalate"}';
    const first = firing({ alertname: 'Escalate', severity: 'warning', n: '1' }, '2026-01-03T00:00:00Z');
    const low = await post()
      .set(auth)
      .send(payload([first], group));
    expect(low.body.opened).toBe(1);
    const high = await post()
      .set(auth)
      .send(payload([first, firing({ alertname: 'Escalate', severity: 'critical', n: '2' })], group));
    expect(high.body).toMatchObject({ incidents: low.body.incidents, opened: 0, joined: 1, duplicates: 1 });
    const escalated = await request(api.url).get(`/admin/incidents/${low.body.incidents[0]}`).set(op);
    expect(escalated.body.severity).toBe('P0');
    expect(
      escalated.body.timeline.some(
        (e: { kind: string; message: string }) => e.kind === 'severity' && e.message.startsWith('severity raised from P2 to P0'),
      ),
    ).toBe(true);
    // …but the alert firing anew (a new start) opens a new incident.
    const anew = await post()
      .set(auth)
      .send(payload([firing({ alertname: 'Direct', severity: 'P2' }, '2026-01-02T00:00:00Z')], '{}:{alertname="Twice"}'));
    expect(anew.body.opened).toBe(1);
    expect(anew.body.incidents[0]).not.toBe(id);
  });
});

describe('monitoring/alertmanager.yml', () => {
  it('is valid for amtool and sends every alert but the response-target one to both API instances with the token file', async () => {
    const { execFileSync } = await import('node:child_process');
    const { readFileSync } = await import('node:fs');
    const { parse } = await import('yaml');
    const file = join(__dirname, '..', '..', 'monitoring', 'alertmanager.yml');
    expect(execFileSync('amtool', ['check-config', file], { encoding: 'utf8' })).toContain('SUCCESS');
    const config = parse(readFileSync(file, 'utf8')) as {
      route: { routes: { receiver: string; matchers?: string[]; continue?: boolean }[] };
      receivers: { name: string; webhook_configs?: { url: string; http_config?: { authorization?: { credentials_file?: string } } }[] }[];
    };
    expect(config.route.routes[0]).toMatchObject({
      receiver: 'sav3-incidents',
      continue: true,
      matchers: ['alertname!="IncidentResponseTargetMissed"'],
    });
    const hooks = config.receivers.find((r) => r.name === 'sav3-incidents')!.webhook_configs!;
    expect(hooks.map((h) => h.url)).toEqual(['http://api-1:3000/admin/incidents/alerts', 'http://api-2:3000/admin/incidents/alerts']);
    expect(hooks.every((h) => h.http_config?.authorization?.credentials_file === '/run/secrets/alertmanager_webhook_token')).toBe(true);
  });
});
