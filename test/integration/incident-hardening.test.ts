// Found by an outside attack on the incident and restore-report intake: unreadable bodies answered
// as a PostgreSQL outage, restore reports rewritten or contradicting each other, alert times from
// year 1 or far ahead, resolutions delivered before their firing, credentials in error texts.
import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import request from 'supertest';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { Redis } from 'ioredis';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };
const WEBHOOK_TOKEN = 'hardening-webhook-token-0123456789abc';
const hook = { Authorization: `Bearer ${WEBHOOK_TOKEN}` };

function payload(alerts: object[], groupKey: string, status = 'firing') {
  return { version: '4', groupKey, status, receiver: 'sav3', groupLabels: {}, commonLabels: {}, commonAnnotations: {}, alerts };
}
const alert = (status: 'firing' | 'resolved', labels: Record<string, string>, startsAt: string, endsAt = '0001-01-01T00:00:00Z') => ({
  status,
  labels,
  annotations: {},
  startsAt,
  endsAt,
  generatorURL: '',
  fingerprint: '',
});

describe('incident and restore-report intake under attack', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let api: TestInstance;
  const prefix = uniquePrefix();

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'hardening-media' });
    db = await createScratchDatabase('sav3_harden');
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), DATABASE_URL: db.url, ALERTMANAGER_WEBHOOK_TOKEN: WEBHOOK_TOKEN }, prefix);
  });
  afterAll(async () => {
    await api?.stop();
    await s3?.destroy();
    await db?.drop();
  });

  const incidents = async () =>
    (await request(api.url).get('/admin/incidents?limit=1000').set(op)).body.incidents as {
      id: string;
      title: string;
      status: string;
      startedAt: string;
      alertGroupKey?: string;
    }[];
  // The bytes exactly as given (supertest would serialise a Buffer as JSON).
  const raw = async (path: string, headers: Record<string, string>, body: string | Buffer) => {
    const res = await fetch(`${api.url}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : new Uint8Array(body),
    });
    const text = await res.text();
    let json: { error?: Record<string, unknown> } = {};
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // not JSON: the assertions on status say enough
    }
    return { status: res.status, text, body: json };
  };

  describe('unreadable bodies are the client’s fault (never a 503 blaming PostgreSQL)', () => {
    const good = JSON.stringify(
      payload([alert('firing', { alertname: 'BodyCheck', severity: 'warning' }, new Date().toISOString())], '{}:{alertname="BodyCheck"}'),
    );
    const incident = JSON.stringify({ severity: 'P3', title: 'body check', components: ['api'], summary: 'x' });

    it.each([
      ['/admin/incidents/alerts', hook, good],
      ['/admin/incidents', op, incident],
    ])('%s: a body that is not what its Content-Encoding says is 400, an unknown encoding or charset 415', async (path, auth, body) => {
      const before = (await incidents()).length;
      const notGzip = await raw(path, { ...auth, 'Content-Encoding': 'gzip' }, body);
      expect(notGzip.status).toBe(400);
      expect(notGzip.body.error).toMatchObject({ code: 'bad_request', reason: 'bad_encoding', requestId: expect.any(String) });
      expect(notGzip.text).not.toMatch(/PostgreSQL|database/i);
      const truncated = await raw(path, { ...auth, 'Content-Encoding': 'gzip' }, gzipSync(body).subarray(0, 20));
      expect(truncated.status).toBe(400);
      const notDeflate = await raw(path, { ...auth, 'Content-Encoding': 'deflate' }, body);
      expect(notDeflate.status).toBe(400);
      const unknown = await raw(path, { ...auth, 'Content-Encoding': 'compress' }, body);
      expect(unknown.status).toBe(415);
      expect(unknown.body.error).toMatchObject({ code: 'unsupported_media_type', reason: 'unsupported_encoding' });
      const charset = await raw(path, { ...auth, 'Content-Type': 'application/json; charset=klingon' }, body);
      expect(charset.status).toBe(415);
      expect(charset.body.error).toMatchObject({ code: 'unsupported_media_type', reason: 'unsupported_charset' });
      const malformed = await raw(path, auth, '{"version":');
      expect(malformed.status).toBe(400);
      expect(malformed.body.error).toMatchObject({ code: 'bad_request', reason: 'invalid_json' });
      const gzipMalformed = await raw(path, { ...auth, 'Content-Encoding': 'gzip' }, gzipSync('{"version":'));
      expect(gzipMalformed.status).toBe(400);
      expect((await incidents()).length).toBe(before);
      // A real gzip body is read.
      const gzipped = await raw(path, { ...auth, 'Content-Encoding': 'gzip' }, gzipSync(body));
      expect(gzipped.status).toBeLessThan(300);
    });

    it('too large: 413 on admin routes, 400 on the webhook (Alertmanager must not retry it)', async () => {
      const big = JSON.stringify({ severity: 'P3', title: 't', components: [], summary: 'x'.repeat(20_000) });
      const admin = await raw('/admin/incidents', op, big);
      expect(admin.status).toBe(413);
      expect(admin.body.error).toMatchObject({ code: 'payload_too_large', reason: 'too_large' });
      const bigGzip = await raw('/admin/incidents', { ...op, 'Content-Encoding': 'gzip' }, gzipSync(big));
      expect(bigGzip.status).toBe(413);
      const alerts = Array.from({ length: 300 }, (_, i) =>
        alert('firing', { alertname: 'Big', pad: 'x'.repeat(1000), n: String(i) }, new Date().toISOString()),
      );
      const webhook = await raw(
        '/admin/incidents/alerts',
        { ...hook, 'Content-Encoding': 'gzip' },
        gzipSync(JSON.stringify(payload(alerts, '{}:{alertname="Big"}'))),
      );
      expect(webhook.status).toBe(400);
      expect(webhook.body.error).toMatchObject({ code: 'bad_request', reason: 'too_large' });
    });
  });

  describe('alert times are bounded', () => {
    it('a start in year 1 or far ahead opens at the receipt time with a note; the zero end of a firing alert is no end', async () => {
      const t0 = Date.now();
      const post = (body: object) => request(api.url).post('/admin/incidents/alerts').set(hook).send(body);
      const ancient = await post(
        payload([alert('firing', { alertname: 'Ancient', severity: 'P2' }, '0001-01-01T00:00:00Z')], '{}:{alertname="Ancient"}'),
      );
      expect(ancient.status).toBe(200);
      expect(ancient.body).toMatchObject({ opened: 1, clamped: 1 });
      const future = await post(
        payload([alert('firing', { alertname: 'Future', severity: 'P2' }, '2999-01-01T00:00:00Z')], '{}:{alertname="Future"}'),
      );
      expect(future.body).toMatchObject({ opened: 1, clamped: 1 });
      const normal = await post(
        payload([alert('firing', { alertname: 'Normal', severity: 'P2' }, new Date(t0 - 60_000).toISOString())], '{}:{alertname="Normal"}'),
      );
      expect(normal.body).toMatchObject({ opened: 1, clamped: 0 });
      // A retry of the clamped alert is still the same alert.
      const again = await post(
        payload([alert('firing', { alertname: 'Ancient', severity: 'P2' }, '0001-01-01T00:00:00Z')], '{}:{alertname="Ancient"}'),
      );
      expect(again.body).toMatchObject({ opened: 0, duplicates: 1 });

      for (const id of [ancient.body.incidents[0], future.body.incidents[0]] as string[]) {
        const one = await request(api.url).get(`/admin/incidents/${id}`).set(op);
        const started = Date.parse(one.body.startedAt as string);
        expect(started).toBeGreaterThanOrEqual(t0 - 1000);
        expect(started).toBeLessThanOrEqual(Date.now());
        const entry = (one.body.timeline as { kind: string; at: string; detail: { clamped?: string[] } }[]).find(
          (e) => e.kind === 'alert',
        )!;
        expect(Date.parse(entry.at)).toBeGreaterThanOrEqual(t0 - 1000);
        expect(entry.detail.clamped).toEqual([expect.stringContaining('out of bounds')]);
        const pm = await request(api.url).get(`/admin/incidents/${id}/postmortem`).set(op);
        expect(pm.status).toBe(200);
        expect(pm.text).not.toMatch(/\| (started|detected) \| (0001|2999)|\b\d{5,} h\b|^\| (0001|2999)-/m);
      }
      // A resolution ending in year 1 or far ahead is taken at its receipt time.
      const resolved = await post(
        payload(
          [alert('resolved', { alertname: 'Normal', severity: 'P2' }, new Date(t0 - 60_000).toISOString(), '2999-01-01T00:00:00Z')],
          '{}:{alertname="Normal"}',
          'resolved',
        ),
      );
      expect(resolved.body).toMatchObject({ resolved: 1, clamped: 1 });
      const normalId = normal.body.incidents[0] as string;
      const tl = (await request(api.url).get(`/admin/incidents/${normalId}`).set(op)).body.timeline as { message: string; at: string }[];
      const recovery = tl.find((e) => e.message === 'Monitoring reports that Normal has recovered.')!;
      expect(Date.parse(recovery.at)).toBeLessThanOrEqual(Date.now());
      expect(Date.parse(recovery.at)).toBeGreaterThanOrEqual(t0 - 1000);
    });

    it('an operator cannot start an incident before 2000', async () => {
      const res = await request(api.url)
        .post('/admin/incidents')
        .set(op)
        .send({ severity: 'P3', title: 'old', components: [], summary: 'x', startedAt: '0001-01-01T00:00:00Z' });
      expect(res.status).toBe(400);
      expect(res.body.error.details.startedAt).toBeDefined();
    });
  });

  describe('the order of firing and resolved notifications is irrelevant', () => {
    const post = (body: object) => request(api.url).post('/admin/incidents/alerts').set(hook).send(body);

    it('a resolution delivered before (or without) its firing opens nothing, and the late firing opens nothing either', async () => {
      const group = '{}:{alertname="Flap"}';
      const startsAt = new Date(Date.now() - 120_000).toISOString();
      const endsAt = new Date(Date.now() - 30_000).toISOString();
      const labels = { alertname: 'Flap', severity: 'critical' };
      const res = await post(payload([alert('resolved', labels, startsAt, endsAt)], group, 'resolved'));
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ incidents: [], opened: 0, resolved: 1 });
      const late = await post(payload([alert('firing', labels, startsAt)], group));
      expect(late.status).toBe(200);
      expect(late.body).toMatchObject({ incidents: [], opened: 0, alreadyResolved: 1 });
      // Started again after the resolution: a new firing, a new incident.
      const anew = await post(payload([alert('firing', labels, new Date(Date.now() - 1000).toISOString())], group));
      expect(anew.body.opened).toBe(1);
      expect((await incidents()).filter((i) => i.title === 'Alert: Flap' && i.status !== 'resolved')).toHaveLength(1);
    });

    it('an incident whose alerts all resolved, out of order, ends as with in-order delivery', async () => {
      const run = async (name: string, order: 'in' | 'out') => {
        const group = `{}:{alertname="${name}"}`;
        const t = Date.now();
        const a = { alertname: name, severity: 'warning', n: 'a' };
        const b = { alertname: name, severity: 'critical', n: 'b' };
        const aStart = new Date(t - 300_000).toISOString();
        const bStart = new Date(t - 200_000).toISOString();
        const bEnd = new Date(t - 100_000).toISOString();
        const steps =
          order === 'in'
            ? [
                payload([alert('firing', a, aStart)], group),
                payload([alert('firing', a, aStart), alert('firing', b, bStart)], group),
                payload([alert('resolved', b, bStart, bEnd)], group),
              ]
            : [
                payload([alert('resolved', b, bStart, bEnd)], group, 'resolved'),
                payload([alert('firing', a, aStart)], group),
                payload([alert('firing', a, aStart), alert('firing', b, bStart)], group),
              ];
        for (const s of steps) expect((await post(s)).status).toBe(200);
        const open = (await incidents()).filter((i) => i.title === `Alert: ${name}`);
        expect(open).toHaveLength(1);
        const one = await request(api.url).get(`/admin/incidents/${open[0]!.id}`).set(op);
        const shape = (one.body.timeline as { kind: string; visibility: string; message: string; at: string }[])
          .filter((e) => e.kind === 'alert' || e.kind === 'severity')
          .map((e) => `${e.at.slice(0, 19)} ${e.kind} ${e.visibility} ${e.message.replace(name, 'X')}`)
          .sort();
        return { severity: one.body.severity as string, status: one.body.status as string, shape: shape.map((s) => s.slice(20)) };
      };
      const inOrder = await run('OrderIn', 'in');
      const outOfOrder = await run('OrderOut', 'out');
      expect(inOrder.shape).toContain('alert public Monitoring reports that X has recovered.');
      expect(outOfOrder).toEqual(inOrder);
    });
  });

  describe('restore reports', () => {
    const started = (restoreId: string, at = new Date(Date.now() - 60_000)) => ({
      restoreId,
      seq: 0,
      event: 'started',
      at: at.toISOString(),
      result: 'success',
      plan: { backup: '20260101-000000F', target: { type: 'end_of_archive' } },
    });
    const step = (restoreId: string, seq: number, at: Date, name = 'stop PostgreSQL') => ({
      restoreId,
      seq,
      event: 'step',
      at: at.toISOString(),
      result: 'success',
      step: name,
      durationMs: 1000,
    });
    const finished = (restoreId: string, seq: number, at: Date, extra: object = {}) => ({
      restoreId,
      seq,
      event: 'finished',
      at: at.toISOString(),
      result: 'success',
      durationMs: 30_000,
      ...extra,
    });
    const post = (body: object, headers = op) => request(api.url).post('/admin/database/restores').set(headers).send(body);
    const auditOf = async (restoreId: string) =>
      (
        (await request(api.url).get('/admin/audit?limit=500').set(op)).body.events as {
          id: string;
          result: string;
          detail: { restoreId?: string; step?: string; seq?: number } | null;
        }[]
      ).filter((e) => e.detail?.restoreId === restoreId);

    it('a resend with the same content answers the recorded event; other content for the same report is 409 and changes nothing', async () => {
      const id = randomUUID();
      const first = await post(started(id));
      expect(first.status).toBe(201);
      const replay = await post({ ...started(id, new Date(first.body.event.at)), late: true });
      expect(replay.status).toBe(201);
      expect(replay.body.event).toEqual(first.body.event);
      expect(replay.body.replayed).toBe(true);
      const s1 = step(id, 1, new Date(Date.now() - 50_000));
      expect((await post(s1)).status).toBe(201);
      const changed = await post({ ...s1, result: 'failed' });
      expect(changed.status).toBe(409);
      expect(changed.body.error.code).toBe('report_conflict');
      const otherStep = await post({ ...s1, step: 'verify' });
      expect(otherStep.status).toBe(409);
      const otherTime = await post({ ...s1, at: new Date(Date.now() - 40_000).toISOString() });
      expect(otherTime.status).toBe(409);
      const otherPlan = await post({
        ...started(id, new Date(first.body.event.at)),
        plan: { backup: '20260102-000000F', target: { type: 'end_of_archive' } },
      });
      expect(otherPlan.status).toBe(409);
      const events = await auditOf(id);
      expect(events).toHaveLength(2);
      expect(events.find((e) => e.detail?.seq === 1)).toMatchObject({ result: 'success', detail: { step: 'stop PostgreSQL' } });
      // Two instances taking two versions of one report at once: one is recorded, the other refused.
      const id2 = randomUUID();
      const report = started(id2);
      const [x, y] = await Promise.all([post(report), post({ ...report, result: 'failed' })]);
      expect([x.status, y.status].sort()).toEqual([201, 409]);
      expect(await auditOf(id2)).toHaveLength(1);
    });

    it('reports that contradict each other are refused (409): a second start, before the start, after the outcome, time going back', async () => {
      const id = randomUUID();
      const t = Date.now() - 120_000;
      expect((await post(started(id, new Date(t)))).status).toBe(201);
      expect((await post(step(id, 1, new Date(t + 10_000)))).status).toBe(201);
      const second = await post({ ...started(id, new Date(t + 20_000)), seq: 2 });
      expect(second.status).toBe(409);
      expect(second.body.error.code).toBe('report_inconsistent');
      // seq going forward, time going back
      const back = await post(step(id, 2, new Date(t + 5_000), 'pgbackrest restore'));
      expect(back.status).toBe(409);
      // finished before started
      const early = await post(finished(id, 2, new Date(t - 10_000)));
      expect(early.status).toBe(409);
      expect((await post(finished(id, 3, new Date(t + 30_000)))).status).toBe(201);
      const after = await post(step(id, 4, new Date(t + 40_000), 'verify'));
      expect(after.status).toBe(409);
      const twice = await post(finished(id, 5, new Date(t + 50_000)));
      expect(twice.status).toBe(409);
      // A gap that is later filled in order is fine.
      expect((await post(step(id, 2, new Date(t + 20_000), 'pgbackrest restore'))).status).toBe(201);
      // A start arriving after a step with a lower seq than it: refused.
      const id2 = randomUUID();
      expect((await post(step(id2, 0, new Date(t)))).status).toBe(201);
      expect((await post({ ...started(id2, new Date(t + 1000)), seq: 1 })).status).toBe(409);
      expect((await auditOf(id)).map((e) => e.detail?.seq).sort()).toEqual([0, 1, 2, 3]);
    });

    it('with Redis having forgotten a restore (restarted without its data), the audit events in PostgreSQL still refuse a changed report', async () => {
      const id = randomUUID();
      const t = Date.now() - 60_000;
      expect((await post(started(id, new Date(t)))).status).toBe(201);
      const s1 = step(id, 1, new Date(t + 10_000));
      expect((await post(s1)).status).toBe(201);
      const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
      try {
        expect(await redis.del(`${prefix}restore-reports:${id}`)).toBe(1);
      } finally {
        redis.disconnect();
      }
      const changed = await post({ ...s1, result: 'failed' });
      expect(changed.status).toBe(409);
      expect(changed.body.error.code).toBe('report_conflict');
      const replay = await post(s1);
      expect(replay.status).toBe(201);
      expect(replay.body.replayed).toBe(true);
      expect((await post({ ...started(id, new Date(t + 20_000)), seq: 2 })).body.error.code).toBe('report_inconsistent');
    });

    it('an error text is stored and shown with its credentials redacted (viewer, incident timeline, status page)', async () => {
      const inc = await request(api.url)
        .post('/admin/incidents')
        .set(op)
        .send({
          severity: 'P1',
          title: 'restore in progress',
          components: ['database'],
          summary: 'restoring',
          startedAt: new Date(Date.now() - 60_000).toISOString(),
        });
      expect(inc.status).toBe(201);
      const id = randomUUID();
      const t = Date.now() - 20_000;
      expect((await post(started(id, new Date(t)))).status).toBe(201);
      const error =
        'could not connect to postgres://sav3:hunter2pw@db1.internal:5432/sav3; PGPASSWORD=hunter3pw password=hunter4pw Authorization: Bearer tok5secret';
      const res = await post(finished(id, 1, new Date(t + 10_000), { result: 'failed', error }));
      expect(res.status).toBe(201);
      // The same report resent is the same (redacted) report.
      expect((await post(finished(id, 1, new Date(t + 10_000), { result: 'failed', error }))).status).toBe(201);
      const audit = await request(api.url).get('/admin/audit?limit=500').set(viewer);
      expect(audit.status).toBe(200);
      const event = (audit.body.events as { detail: { restoreId?: string; error?: string } | null }[]).find(
        (e) => e.detail?.restoreId === id && e.detail.error,
      );
      expect(event?.detail?.error).toContain('postgres://[redacted]@');
      const secrets = /hunter2pw|hunter3pw|hunter4pw|tok5secret/;
      expect(audit.text).not.toMatch(secrets);
      const timeline = await request(api.url).get(`/admin/incidents/${inc.body.id}`).set(viewer);
      expect(timeline.text).toContain('database.restore');
      expect(timeline.text).not.toMatch(secrets);
      expect((await request(api.url).get('/status')).text).not.toMatch(secrets);
      expect((await request(api.url).get('/status.json')).text).not.toMatch(secrets);
      expect(api.logs()).not.toMatch(secrets);
    });
  });
});
