import pg from 'pg';
import request from 'supertest';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { startWebhookReceiver } from '../support/webhook-receiver.ts';
import { eventually } from '../../support/common.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

// Invariant: every notification owed is accepted by every receiver exactly once, in the order it
// was owed, whatever the receivers' failures and whichever of two instances sends it.
describe('incident notifications through the PostgreSQL outbox, two instances, failing receivers', () => {
  let s3: S3ServerHandle;
  let db: ScratchDatabase;
  let a: TestInstance;
  let b: TestInstance;
  let flaky: Awaited<ReturnType<typeof startWebhookReceiver>>;
  let steady: Awaited<ReturnType<typeof startWebhookReceiver>>;
  let sql: pg.Client;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'notify-media' });
    db = await createScratchDatabase('sav3_notify');
    flaky = await startWebhookReceiver();
    steady = await startWebhookReceiver();
    const env = { ...mediaEnv('PRIMARY', s3), DATABASE_URL: db.url, NOTIFY_WEBHOOK_URLS: `${flaky.url},${steady.url}` };
    const prefix = uniquePrefix();
    const options = { outboxPollMs: 50, outboxBackoffMs: 100, incidentChecksMs: 500 };
    a = await startInstance({ ...env, INSTANCE_ID: 'notify-a' }, prefix, options);
    b = await startInstance({ ...env, INSTANCE_ID: 'notify-b' }, prefix, options);
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await sql?.end();
    await flaky?.close();
    await steady?.close();
    await s3?.destroy();
    await db?.drop();
  });

  it('random operations on both instances while one receiver fails and recovers: each message arrives once, in order', async () => {
    flaky.setMode('fail');
    const pick = () => (Math.random() < 0.5 ? a : b);
    const open: string[] = [];
    let owed = 0;
    const started = Date.now();
    for (let step = 0; step < 40; step++) {
      if (step % 7 === 3) flaky.setMode(Math.random() < 0.6 ? 'fail' : 'ok');
      const r = Math.random();
      if (open.length === 0 || r < 0.3) {
        const res = await request(pick().url)
          .post('/admin/incidents')
          .set(op)
          .send({ severity: `P${step % 4}`, title: `incident ${step}`, components: ['database'], summary: `problem ${step}` });
        expect(res.status).toBe(201);
        open.push(res.body.id);
        owed += 1;
      } else {
        const id = open[Math.floor(Math.random() * open.length)]!;
        const kind = Math.random();
        const body =
          kind < 0.3
            ? { message: `note ${step}`, visibility: 'internal' }
            : kind < 0.75
              ? { message: `progress ${step}`, visibility: 'public' }
              : { message: `fixed ${step}`, visibility: 'public', status: 'resolved' };
        const res = await request(pick().url).post(`/admin/incidents/${id}/updates`).set(op).send(body);
        expect(res.status).toBe(201);
        if (body.visibility === 'public') owed += 1;
        if ('status' in body) open.splice(open.indexOf(id), 1);
      }
    }
    // The flaky receiver has been failing for a while; it now recovers for good.
    await new Promise((r) => setTimeout(r, 300));
    flaky.setMode('ok');
    const pending = async () =>
      Number((await sql.query("SELECT count(*)::int AS n FROM notification_outbox WHERE status = 'pending'")).rows[0].n);
    await eventually(pending, (n) => n === 0, 20_000);

    const rows = (await sql.query('SELECT seq, idempotency_key, receiver, attempts, sent_at FROM notification_outbox ORDER BY seq'))
      .rows as { idempotency_key: string; receiver: string; attempts: number }[];
    expect(rows.length).toBe(owed * 2);
    const receivers = [...new Set(rows.map((r) => r.receiver))];
    expect(receivers).toHaveLength(2);
    for (const receiver of [flaky, steady]) {
      const accepted = receiver.accepted().map((m) => m.key);
      // Exactly once each…
      expect(new Set(accepted).size).toBe(accepted.length);
      // …every owed one, in the order owed (the receiver id is the key's suffix).
      const suffix = accepted[0]!.split('@')[1];
      expect(accepted).toEqual(rows.filter((r) => r.idempotency_key.endsWith(`@${suffix}`)).map((r) => r.idempotency_key));
    }
    expect(flaky.received.filter((m) => m.status === 503).length).toBeGreaterThan(0);
    expect(steady.received.every((m) => m.status === 200)).toBe(true);
    expect(Math.max(...rows.map((r) => r.attempts))).toBeGreaterThan(1);
    const texts = steady.accepted().map((m) => m.body.text);
    expect(texts.some((t) => t.startsWith('Subject: [RESOLVED]') && /Total Downtime: \d/.test(t))).toBe(true);
    expect(texts.filter((t) => /^Subject: \[P\d\] SAV3 System Incident/.test(t)).length).toBe(
      rows.filter((r) => r.idempotency_key.includes(':initial@')).length / 2,
    );
    expect(Date.now() - started).toBeLessThan(40_000);
    // Either instance may have made the failed deliveries: count both.
    const failed = await Promise.all(
      [a, b].map(async (i) =>
        Number(/sav3_notification_deliveries_total\{result="failed"\} (\d+)/.exec((await request(i.url).get('/metrics')).text)?.[1] ?? 0),
      ),
    );
    expect(failed[0]! + failed[1]!).toBeGreaterThan(0);
  });

  it('renders the initial notification with real values: start time, impact, ETA, next update, id', async () => {
    const res = await request(a.url)
      .post('/admin/incidents')
      .set(op)
      .send({
        severity: 'P0',
        title: 'Database Unavailable',
        components: ['database'],
        summary: 'reports of database connectivity issues',
        eta: '30 minutes',
        startedAt: new Date(Date.now() - 120_000).toISOString(),
      });
    const id = res.body.id as string;
    const msg = await eventually(
      async () => steady.accepted().find((m) => m.body.incidentId === id),
      (m) => m !== undefined,
      10_000,
    );
    expect(msg!.body).toMatchObject({ kind: 'initial', severity: 'P0', status: 'investigating' });
    const text = msg!.body.text;
    expect(text).toContain('Subject: [P0] SAV3 System Incident - Database Unavailable');
    expect(text).toContain('We are currently investigating reports of database connectivity issues, affecting the SAV3 platform.');
    expect(text).toContain('Impact: Users may experience login failures and data access issues');
    expect(text).toContain(`Start Time: ${res.body.startedAt}`);
    expect(text).toContain('ETA: 30 minutes');
    expect(text).toContain(`Incident ID: ${id}`);
    expect(text).toContain(`Next update: ${res.body.nextUpdateDueAt}`);
    expect(Date.parse(res.body.nextUpdateDueAt) - Date.parse(res.body.detectedAt)).toBe(15 * 60_000);

    // A P0 whose next update is overdue sends one reminder per due time, from either instance.
    await sql.query("UPDATE incidents SET next_update_due_at = now() - interval '1 second' WHERE id = $1", [id]);
    const reminder = await eventually(
      async () => steady.accepted().filter((m) => m.body.incidentId === id && m.body.kind === 'reminder'),
      (m) => m.length > 0,
      10_000,
    );
    expect(reminder[0]!.body.text).toContain(`[REMINDER]`);
    await new Promise((r) => setTimeout(r, 2500));
    expect(steady.accepted().filter((m) => m.body.incidentId === id && m.body.kind === 'reminder')).toHaveLength(1);

    const resolved = await request(b.url).post(`/admin/incidents/${id}/updates`).set(op).send({
      message: 'Primary database restored from backup',
      visibility: 'public',
      status: 'resolved',
      rootCause: 'disk full on the primary',
    });
    const last = await eventually(
      async () => steady.accepted().find((m) => m.body.incidentId === id && m.body.kind === 'resolution'),
      (m) => m !== undefined,
      10_000,
    );
    expect(last!.body.text).toContain('Subject: [RESOLVED] SAV3 System Incident - Database Unavailable');
    expect(last!.body.text).toContain('Resolution: Primary database restored from backup');
    expect(last!.body.text).toContain('Root Cause: disk full on the primary');
    expect(last!.body.text).toMatch(/Total Downtime: 2 min \d+ s/);
    expect(resolved.body.resolvedAt).not.toBeNull();
  });
});
