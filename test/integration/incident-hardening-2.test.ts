// Found by a second outside attack on incidents: credentials in summaries, updates, ETAs and root
// causes; redaction gaps; an open P0 hidden from /status by newer minor incidents; anonymous
// streams locking operators out; a long Alertmanager group key breaking the index; a resolved
// incident acknowledged; control characters, BiDi overrides and chat or Markdown markup reaching
// terminals, Slack, notification subjects and the post-mortem.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import request from 'supertest';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { eventually } from '../../support/common.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { startWebhookReceiver } from '../support/webhook-receiver.ts';
import { SCRIPTS } from '../support/run-script.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };
const WEBHOOK_TOKEN = 'hardening2-webhook-token-0123456789ab';
const hook = { Authorization: `Bearer ${WEBHOOK_TOKEN}` };
const PER_ADDRESS = 3;

function payload(alerts: object[], groupKey: string, status = 'firing') {
  return { version: '4', groupKey, status, receiver: 'sav3', groupLabels: {}, commonLabels: {}, commonAnnotations: {}, alerts };
}
const alert = (
  status: 'firing' | 'resolved',
  labels: Record<string, string>,
  startsAt: string,
  annotations: Record<string, string> = {},
  endsAt = '0001-01-01T00:00:00Z',
) => ({ status, labels, annotations, startsAt, endsAt, generatorURL: '', fingerprint: '' });

/** An open SSE stream read into a string until closed. */
async function openStream(url: string, headers: Record<string, string> = {}) {
  const abort = new AbortController();
  const res = await fetch(url, { headers: { Accept: 'text/event-stream', ...headers }, signal: abort.signal });
  let text = '';
  if (res.ok && res.body) {
    void (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += decoder.decode(chunk, { stream: true });
      } catch {
        // aborted
      }
    })();
  } else await res.text();
  return { res, text: () => text, close: () => abort.abort() };
}

describe('incidents under a second attack', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let api: TestInstance;
  let receiver: Awaited<ReturnType<typeof startWebhookReceiver>>;
  let sql: pg.Client;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'hardening2-media' });
    db = await createScratchDatabase('sav3_harden2');
    receiver = await startWebhookReceiver();
    api = await startInstance(
      { ...mediaEnv('PRIMARY', s3), DATABASE_URL: db.url, ALERTMANAGER_WEBHOOK_TOKEN: WEBHOOK_TOKEN, NOTIFY_WEBHOOK_URLS: receiver.url },
      uniquePrefix(),
      { outboxPollMs: 50, outboxBackoffMs: 100, incidentChecksMs: 300, publicStreams: { perAddress: PER_ADDRESS } },
    );
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });
  afterAll(async () => {
    await api?.stop();
    await sql?.end();
    await receiver?.close();
    await s3?.destroy();
    await db?.drop();
  });

  const create = (body: object) => request(api.url).post('/admin/incidents').set(op).send(body);
  const update = (id: string, body: object) => request(api.url).post(`/admin/incidents/${id}/updates`).set(op).send(body);
  const messagesOf = (id: string) => receiver.accepted().filter((m) => m.body.incidentId === id);

  it('credentials in the title, summary, ETA, updates and root cause are stored, shown, streamed and sent redacted', async () => {
    const events = await openStream(`${api.url}/admin/events`, viewer);
    expect(events.res.status).toBe(200);
    const created = await create({
      severity: 'P1',
      title: 'login fails for Bearer tokTITLE!x',
      components: ['database'],
      summary: 'connect postgres://sav3:pwSUM@MARY@db1.internal/x fails',
      eta: 'after pass=pwETA1 is rotated',
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect((await update(id, { message: 'ran psql with --password pwMESSAGE', eta: 'when pwd=pwETA2 works' })).status).toBe(201);
    expect(
      (await update(id, { message: 'fixed sav3:pwRESOLVE@db1:5432', status: 'resolved', rootCause: 'mysql -uroot -ppwROOT was logged' }))
        .status,
    ).toBe(201);
    await eventually(
      async () => messagesOf(id).length,
      (n) => n >= 3,
      5000,
    );
    const secrets = /tokTITLE|pwSUM|MARY@|pwETA1|pwETA2|pwMESSAGE|pwRESOLVE|pwROOT/;
    const one = await request(api.url).get(`/admin/incidents/${id}`).set(viewer);
    expect(one.body.summary).toContain('postgres://[redacted]@db1.internal/x');
    expect(one.body.rootCause).toBe('mysql -uroot -p[redacted] was logged');
    expect(one.text).not.toMatch(secrets);
    expect((await request(api.url).get('/admin/incidents?limit=1000').set(viewer)).text).not.toMatch(secrets);
    const pm = await request(api.url).get(`/admin/incidents/${id}/postmortem`).set(viewer);
    expect(pm.status).toBe(200);
    expect(pm.text).not.toMatch(secrets);
    expect(created.body.initialNotification).not.toMatch(secrets);
    for (const m of messagesOf(id)) expect(m.body.text).not.toMatch(secrets);
    expect(messagesOf(id).map((m) => m.body.kind)).toEqual(['initial', 'update', 'resolution']);
    expect(messagesOf(id)[1]!.body.text).toContain('ETA: when pwd=[redacted] works');
    await eventually(
      async () => events.text(),
      (t) => t.includes('"resolved"'),
      3000,
    );
    events.close();
    expect(events.text()).toContain(id);
    expect(events.text()).not.toMatch(secrets);
    // Stored redacted: nothing to leak from a backup or another reader of the tables.
    const stored = await sql.query(
      `SELECT i.title, i.summary, i.root_cause, u.message, o.payload::text AS payload
         FROM incidents i JOIN incident_updates u ON u.incident_id = i.id LEFT JOIN notification_outbox o ON o.incident_id = i.id
        WHERE i.id = $1`,
      [id],
    );
    expect(stored.rows.length).toBeGreaterThan(0);
    expect(JSON.stringify(stored.rows)).not.toMatch(secrets);
    expect(api.logs()).not.toMatch(secrets);
  });

  it('credentials in alert labels and annotations reach neither the record nor the live events', async () => {
    const events = await openStream(`${api.url}/admin/events`, viewer);
    const t = new Date(Date.now() - 5000).toISOString();
    const post = (labels: Record<string, string>) =>
      request(api.url)
        .post('/admin/incidents/alerts')
        .set(hook)
        .send(payload([alert('firing', { severity: 'P3', ...labels }, t, { summary: 'dsn u:pwANNOT@db1:5432' })], '{}:{leak="1"}'));
    const opened = await post({ alertname: 'Leak password=pwOPEN' });
    expect(opened.body.opened).toBe(1);
    const joined = await post({ alertname: 'Leak --token pwJOIN' });
    expect(joined.body.joined).toBe(1);
    await eventually(
      async () => events.text(),
      (text) => text.includes('incident.timeline'),
      3000,
    );
    events.close();
    const secrets = /pwOPEN|pwJOIN|pwANNOT/;
    expect(events.text()).not.toMatch(secrets);
    const id = opened.body.incidents[0] as string;
    expect((await request(api.url).get(`/admin/incidents/${id}`).set(viewer)).text).not.toMatch(secrets);
    expect((await request(api.url).get(`/admin/incidents/${id}/postmortem`).set(viewer)).text).not.toMatch(secrets);
    expect((await update(id, { message: 'done', status: 'resolved' })).status).toBe(201);
  });

  it('a resolved incident cannot be acknowledged (409), like any other change', async () => {
    const fired = await request(api.url)
      .post('/admin/incidents/alerts')
      .set(hook)
      .send(payload([alert('firing', { alertname: 'AckAfterResolve', severity: 'P2' }, new Date().toISOString())], '{}:{ack="1"}'));
    expect(fired.body.opened).toBe(1);
    const id = fired.body.incidents[0] as string;
    expect((await update(id, { message: 'gone', status: 'resolved' })).status).toBe(201);
    const before = (await request(api.url).get(`/admin/incidents/${id}`).set(viewer)).body;
    const ack = await request(api.url).post(`/admin/incidents/${id}/acknowledge`).set(op).send({});
    expect(ack.status).toBe(409);
    expect(ack.body.error.code).toBe('conflict');
    const after = (await request(api.url).get(`/admin/incidents/${id}`).set(viewer)).body;
    expect(after).toEqual(before);
  });

  it('a 4096-character group key opens, joins and resolves like any other; an overlong startsAt is a 400, not a 503', async () => {
    // Random (incompressible) labels: PostgreSQL would compress a repetitive key below the btree limit.
    const groupKey = `{}/{severity="P2"}:{alertname="Long", instance="${randomBytes(4096).toString('base64')}`.slice(0, 4094) + '"}';
    expect(groupKey.length).toBe(4096);
    const t = new Date(Date.now() - 10_000).toISOString();
    const post = (body: object) => request(api.url).post('/admin/incidents/alerts').set(hook).send(body);
    const first = await post(payload([alert('firing', { alertname: 'Long', severity: 'P2', n: '1' }, t)], groupKey));
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ opened: 1 });
    const again = await post(payload([alert('firing', { alertname: 'Long', severity: 'P2', n: '1' }, t)], groupKey));
    expect(again.body).toMatchObject({ opened: 0, duplicates: 1, incidents: first.body.incidents });
    const second = await post(payload([alert('firing', { alertname: 'Long', severity: 'P2', n: '2' }, t)], groupKey));
    expect(second.body).toMatchObject({ opened: 0, joined: 1, incidents: first.body.incidents });
    const resolved = await post(
      payload([alert('resolved', { alertname: 'Long', severity: 'P2', n: '1' }, t, {}, new Date().toISOString())], groupKey, 'resolved'),
    );
    expect(resolved.body).toMatchObject({ resolved: 1, incidents: first.body.incidents });
    expect((await update(first.body.incidents[0] as string, { message: 'over', status: 'resolved' })).status).toBe(201);
    // A start with thousands of fractional digits would make an unindexable dedupe key.
    const long = await post(
      payload([alert('firing', { alertname: 'LongStart', severity: 'P2' }, `2026-01-01T00:00:00.${'1'.repeat(3000)}Z`)], '{}:{x="y"}'),
    );
    expect(long.status).toBe(400);
  });

  describe('control characters, BiDi overrides and markup', () => {
    it('titles and ETAs are one line without control or BiDi characters; longer texts allow only tabs and line breaks', async () => {
      const base = { severity: 'P3', components: [], summary: 'ok' };
      for (const title of [
        'clear\u001b[2Jscreen',
        'two\nlines',
        'carriage\rreturn',
        'evil\u202etxt.exe',
        'isolate\u2066x',
        'nul\u0000',
        'del\u007f',
      ])
        expect((await create({ ...base, title })).status).toBe(400);
      expect((await create({ ...base, title: 'ok', eta: 'soon\nSubject: forged' })).status).toBe(400);
      expect((await create({ ...base, title: 'ok', summary: 'bell\u0007' })).status).toBe(400);
      expect((await create({ ...base, title: 'ok', summary: 'bidi \u202e' })).status).toBe(400);
      const good = await create({ ...base, title: 'multi-line summary', summary: 'line one\r\nline two\tcolumn' });
      expect(good.status).toBe(201);
      expect(good.body.summary).toBe('line one\nline two\tcolumn');
      const id = good.body.id as string;
      expect((await update(id, { message: 'esc \u001b]0;title\u0007' })).status).toBe(400);
      expect((await update(id, { message: 'ok', eta: 'a\nb' })).status).toBe(400);
      expect((await update(id, { message: 'ok', rootCause: 'x\u009bc' })).status).toBe(400);
      const listed = await request(api.url).get('/admin/incidents?limit=1000').set(viewer);
      expect(listed.text).not.toMatch(/\\u001b|\\u202e|clear|forged/);
      expect((await update(id, { message: 'done', status: 'resolved' })).status).toBe(201);
    });

    it('alert label values lose their control and BiDi characters (an alert is not refused)', async () => {
      const res = await request(api.url)
        .post('/admin/incidents/alerts')
        .set(hook)
        .send(
          payload(
            [
              alert(
                'firing',
                { alertname: 'Disk\u001b]0;pwned\u0007Full\nSubject: forged\u202e', severity: 'P3' },
                new Date().toISOString(),
                { summary: 'red \u001b[31malert\u001b[0m\nsecond line' },
              ),
            ],
            '{}:{ctl="1"}',
          ),
        );
      expect(res.status).toBe(200);
      const id = res.body.incidents[0] as string;
      const one = await request(api.url).get(`/admin/incidents/${id}`).set(viewer);
      const raw = JSON.stringify(one.body);
      expect(raw).not.toMatch(/\\u001b|\\u0007|\u202e/);
      expect(one.body.title).not.toMatch(/[\n\r]/);
      expect(one.body.title).toBe('Alert: Disk ]0;pwned Full Subject: forged ');
      const initial = await eventually(
        async () => messagesOf(id),
        (m) => m.length >= 1,
        5000,
      );
      expect(initial[0]!.body.text.split('\n').filter((l) => l.startsWith('Subject:'))).toHaveLength(1);
      expect((await update(id, { message: 'done', status: 'resolved' })).status).toBe(201);
    });

    it('notifications escape Slack and Mattermost markup; the post-mortem cannot be given headings or HTML', async () => {
      const created = await create({
        severity: 'P2',
        title: '<!channel> see <https://evil.example/|the fix> & @here',
        components: ['api'],
        summary: 'first line\n# Forged heading\n<script>alert(1)</script>\n---\n```',
      });
      expect(created.status).toBe(201);
      const id = created.body.id as string;
      expect(
        (
          await update(id, {
            message: 'resolved\n## Also forged\n<img src=x onerror=alert(1)>',
            status: 'resolved',
            rootCause: '# Root\n<b>x</b>',
          })
        ).status,
      ).toBe(201);
      const sent = await eventually(
        async () => messagesOf(id),
        (m) => m.length >= 2,
        5000,
      );
      for (const m of sent) {
        expect(m.body.text).not.toMatch(/<!channel>|<https:|<img|<!|@here/);
        expect(m.body.text).toContain('&lt;!channel&gt; see &lt;https://evil.example/|the fix&gt; &amp; @\u200bhere');
      }
      const pm = (await request(api.url).get(`/admin/incidents/${id}/postmortem`).set(viewer)).text;
      const headings = pm.split('\n').filter((l) => /^\s{0,3}#/.test(l));
      expect(headings).toEqual([
        `# Post-mortem: ${id} — &lt;!channel&gt; see &lt;https://evil.example/\\|the fix&gt; &amp; @here`,
        '## Summary',
        '## Key times (UTC)',
        '## Recovery objectives',
        '## DR actions',
        '## Timeline (UTC)',
        '## Root cause',
        '## What went well',
        '## What went wrong',
        '## Follow-ups',
      ]);
      expect(pm).not.toMatch(/<script|<img|<b>|^---$|^```/m);
      expect(pm).toContain('\\# Forged heading');
      expect(pm).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
      expect(pm).toContain('\\# Root');
    });

    it('monitor-recovery.sh prints line breaks and control characters from the API as visible escapes', async () => {
      const { body: inc } = await create({ severity: 'P3', title: 'terminal check', components: [], summary: 'ok' });
      const child = spawn('bash', [join(SCRIPTS, 'monitor-recovery.sh'), '--incident-id', inc.id], {
        env: { PATH: process.env.PATH ?? '', SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: VIEWER_TOKEN },
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      await new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => d.toString().includes('following') && resolve()));
      const forged = `2026-01-01T00:00:00.000Z other incident.updated ${inc.id} resolved: all fine`;
      expect((await update(inc.id, { message: `first\n${forged}\r\n\tend`, status: 'resolved' })).status).toBe(201);
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 8000))]);
      if (code === 'timeout') child.kill();
      expect(code).toBe(0);
      expect(out).toContain(`first\\x0a${forged}\\x0a\\x09end`);
      expect(out.split('\n').filter((l) => l.startsWith('2026-01-01T00:00:00.000Z'))).toEqual([]);
      // eslint-disable-next-line no-control-regex -- no control character but the line feeds
      expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
    });
  });

  it('anonymous status streams have their own pool and a per-address bound: operators are never locked out', async () => {
    const open = await Promise.all(Array.from({ length: PER_ADDRESS }, () => openStream(`${api.url}/status/events`)));
    try {
      expect(open.map((s) => s.res.status)).toEqual(Array(PER_ADDRESS).fill(200));
      const refused = await openStream(`${api.url}/status/events`);
      expect(refused.res.status).toBe(429);
      expect(refused.res.headers.get('retry-after')).toBe('30');
      const admin = await openStream(`${api.url}/admin/events`, viewer);
      expect(admin.res.status).toBe(200);
      admin.close();
    } finally {
      for (const s of open) s.close();
    }
    // Closed streams give their places back.
    const again = await eventually(
      () => openStream(`${api.url}/status/events`),
      (s) => {
        if (s.res.status !== 200) return false;
        s.close();
        return true;
      },
      3000,
      100,
    );
    expect(again.res.status).toBe(200);
  });

  it('the same alert routed into two groups opens an incident in each; a re-send is a duplicate within its group only', async () => {
    const t = new Date(Date.now() - 5000).toISOString();
    const same = alert('firing', { alertname: 'TwoRoutes', severity: 'P3', instance: 'a' }, t);
    const post = (groupKey: string) =>
      request(api.url)
        .post('/admin/incidents/alerts')
        .set(hook)
        .send(payload([same], groupKey));
    const first = await post('{}/{route="one"}:{alertname="TwoRoutes"}');
    const second = await post('{}/{route="two"}:{instance="a"}');
    expect(first.body).toMatchObject({ opened: 1 });
    expect(second.body).toMatchObject({ opened: 1 });
    expect(second.body.incidents).not.toEqual(first.body.incidents);
    expect((await post('{}/{route="two"}:{instance="a"}')).body).toMatchObject({
      opened: 0,
      duplicates: 1,
      incidents: second.body.incidents,
    });
    for (const id of [...first.body.incidents, ...second.body.incidents] as string[])
      expect((await update(id, { message: 'done', status: 'resolved' })).status).toBe(201);
  });

  it('entries recorded under the old dedupe key (before it named the group) are still recognised', async () => {
    const t = new Date(Date.now() - 5000).toISOString();
    const groupKey = '{}:{legacy="1"}';
    const post = (a: object, status = 'firing') =>
      request(api.url)
        .post('/admin/incidents/alerts')
        .set(hook)
        .send(payload([a], groupKey, status));
    const opened = await post(alert('firing', { alertname: 'Legacy', severity: 'P3', n: '1' }, t));
    expect(opened.body.opened).toBe(1);
    const id = opened.body.incidents[0] as string;
    // What an earlier release wrote for two other alerts of the group (firing, and the recovery of n=1).
    const fp = (await request(api.url).get(`/admin/incidents/${id}`).set(viewer)).body.timeline.find(
      (e: { kind: string }) => e.kind === 'alert',
    ).detail.fingerprint as string;
    const old = alert('firing', { alertname: 'Legacy', severity: 'P3', n: '2' }, t);
    const oldFp = (
      await request(api.url)
        .post('/admin/incidents/alerts')
        .set(hook)
        .send(payload([old], '{}:{probe="fp"}'))
    ).body;
    const probe = (await request(api.url).get(`/admin/incidents/${oldFp.incidents[0]}`).set(viewer)).body.timeline.find(
      (e: { kind: string }) => e.kind === 'alert',
    ).detail.fingerprint as string;
    expect((await update(oldFp.incidents[0] as string, { message: 'probe done', status: 'resolved' })).status).toBe(201);
    await sql.query(
      `INSERT INTO incident_updates (id, incident_id, at, kind, visibility, message, author, dedupe_key)
       VALUES (gen_random_uuid(), $1, now(), 'alert', 'internal', 'old firing', 'alertmanager', $2),
              (gen_random_uuid(), $1, now(), 'alert', 'public', 'old recovery', 'alertmanager', $3)`,
      [id, `alert:${probe}:${t}:firing`, `alert:${fp}:${t}:resolved`],
    );
    const count = async () => (await request(api.url).get(`/admin/incidents/${id}`).set(viewer)).body.timeline.length as number;
    const before = await count();
    expect((await post(old)).body).toMatchObject({ opened: 0, joined: 0, duplicates: 1 });
    expect(
      (await post(alert('resolved', { alertname: 'Legacy', severity: 'P3', n: '1' }, t, {}, new Date().toISOString()), 'resolved')).body,
    ).toMatchObject({ resolved: 1 });
    expect(await count()).toBe(before);
    expect((await update(id, { message: 'done', status: 'resolved' })).status).toBe(201);
    // A still-firing alert handled (under its old key) by an incident since resolved reopens nothing.
    expect((await post(old)).body).toMatchObject({ opened: 0 });
  });

  it('wrong webhook tokens back off (429 with Retry-After) like the admin API; the right token still passes', async () => {
    const post = (auth: Record<string, string>) =>
      request(api.url)
        .post('/admin/incidents/alerts')
        .set(auth)
        .send(payload([alert('firing', { alertname: 'Guess', severity: 'P3' }, new Date().toISOString())], '{}:{guess="1"}'));
    const answers: number[] = [];
    for (let i = 0; i < 8; i++) answers.push((await post({ Authorization: `Bearer guess-${i}` })).status);
    expect(answers.slice(0, 4)).toEqual([401, 401, 401, 401]);
    expect(answers.slice(5)).toEqual([429, 429, 429]);
    const throttled = await post({ Authorization: 'Bearer guess-x' });
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);
    const right = await post(hook);
    expect(right.status).toBe(200);
    expect(right.body.opened).toBe(1);
    expect((await update(right.body.incidents[0] as string, { message: 'done', status: 'resolved' })).status).toBe(201);
  });

  describe('many open incidents', () => {
    afterAll(async () => {
      await sql.query(`UPDATE incidents SET status = 'resolved', resolved_at = now() WHERE id LIKE 'INC-19990101-%'`);
    });

    it('an old P0 stays first on /status behind 1030 newer minor incidents, the rest counted; the gauges count them all', async () => {
      const hour = 3600_000;
      await sql.query(
        `INSERT INTO incidents (id, severity, title, summary, components, status, source, created_by, started_at, detected_at)
         VALUES ('INC-19990101-1', 'P0', 'old P0 outage', 's', '{database}', 'investigating', 'alertmanager', 'alertmanager', $1, $1)`,
        [new Date(Date.now() - 2 * hour)],
      );
      await sql.query(
        `INSERT INTO incidents (id, severity, title, summary, components, status, source, created_by, started_at, detected_at, acknowledged_at, acknowledged_by)
         SELECT 'INC-19990101-' || (n + 1), CASE WHEN n <= 1005 THEN 'P2' ELSE 'P3' END, 'minor ' || n, 's', '{api}', 'investigating', 'manual', 'ops',
                now() - interval '1 minute', now() - interval '1 minute' + n * interval '1 ms', now(), 'ops'
           FROM generate_series(1, 1030) AS n`,
      );
      const status = await eventually(
        async () =>
          (await request(api.url).get('/status.json')).body as {
            incidents: { id: string; severity: string }[];
            moreIncidents: { severity: string; count: number }[];
          },
        (s) => (s.incidents ?? []).some((i) => i.id === 'INC-19990101-1'),
        3000,
      );
      expect(status.incidents[0]).toMatchObject({ id: 'INC-19990101-1', severity: 'P0' });
      const severities = status.incidents.map((i) => i.severity);
      expect(severities).toEqual([...severities].sort());
      expect(status.moreIncidents).toEqual([
        { severity: 'P2', count: 1005 - 20 },
        { severity: 'P3', count: 25 - 20 },
      ]);
      const html = (await request(api.url).get('/status')).text;
      expect(html).toContain('old P0 outage');
      expect(html).toContain('And 985 more open P2 incidents.');
      expect(html).toContain('And 5 more open P3 incidents.');
      const metrics = await eventually(
        async () => (await request(api.url).get('/metrics')).text,
        (t) => /sav3_incidents_open\{severity="P2"\} 1005\b/.test(t),
        5000,
      );
      expect(metrics).toMatch(/sav3_incidents_open\{severity="P0"\} 1\b/);
      const unacked = Number(/sav3_incident_unacknowledged_seconds\{severity="P0"\} (\d+)/.exec(metrics)?.[1]);
      expect(unacked).toBeGreaterThanOrEqual(7190);
      expect(unacked).toBeLessThan(7300);
    });
  });
});
