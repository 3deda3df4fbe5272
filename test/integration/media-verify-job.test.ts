import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import pg from 'pg';
import request from 'supertest';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startMediaWorld, type MediaWorld } from '../support/world.ts';
import { eventually } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
/** Above this many keys `POST /admin/verify/media` runs its consistency pass as a job (media-module.ts). */
const INLINE_MAX = 2000;

/**
 * Seeds versions below the API (content under `v/<id>` on the stores, rows in the tables), as the
 * sync-past-1,000 test does: going through PUT would make the test minutes long.
 */
async function seed(sql: pg.Client, stores: ObjectStore[], from: number, to: number, backends: string[]): Promise<Map<string, string>> {
  const ids = new Map<string, string>();
  for (let i = from; i < to; i += 1) ids.set(`verify/${String(i).padStart(5, '0')}`, randomUUID());
  const queue = [...ids.entries()];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let item = queue.shift(); item; item = queue.shift()) {
        const body = Buffer.from(`content of ${item[0]}`);
        for (const store of stores) await store.put(`v/${item[1]}`, Readable.from([body]), body.length, 'text/plain');
      }
    }),
  );
  await sql.query(
    `WITH src AS (SELECT k AS key, id::uuid AS id, convert_to('content of ' || k, 'UTF8') AS body FROM unnest($1::text[], $2::text[]) AS t(k, id)),
     v AS (INSERT INTO media_versions (id, key, size, sha256, content_type, backends) SELECT id, key, length(body), encode(sha256(body), 'hex'), 'text/plain', $3::text[] FROM src)
     INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at, version) SELECT key, length(body), encode(sha256(body), 'hex'), 'text/plain', $4, now(), id FROM src`,
    [[...ids.keys()], [...ids.values()], backends, backends[0]],
  );
  return ids;
}

describe('POST /admin/verify/media on a large store: the consistency pass as a job', () => {
  let world: MediaWorld;
  let a: TestInstance;
  let b: TestInstance;

  beforeAll(async () => {
    // A short grace period so that an injected orphan counts; the collector never runs during the test;
    // canaries bounded generously (the machine is shared).
    world = await startMediaWorld({
      bucket: 'vj-primary',
      backupBucket: 'vj-backup',
      env: {
        MEDIA_GC_GRACE_SECONDS: '2',
        MEDIA_CACHE_TTL_SECONDS: '1',
        MEDIA_GC_INTERVAL_MS: '3600000',
        HEALTH_TIMEOUT_MS: '5000',
        // A listing page of 1,000 objects from the in-process S3 server can take more than the
        // default 5 s on a loaded machine; this test is about the job path, not S3 timeouts.
        MEDIA_S3_TIMEOUT_MS: '30000',
      },
    });
    a = await world.start({ INSTANCE_ID: 'vj-a' });
    b = await world.start({ INSTANCE_ID: 'vj-b' });
  });
  afterAll(async () => {
    await world?.destroy();
  });

  it(`checks up to ${INLINE_MAX} keys inline; beyond, a job whose report (from any instance) names an injected missing version and an orphan`, async () => {
    const p = a.service.objectStores.get('primary')!;
    const bk = a.service.objectStores.get('backup')!;
    // Exactly the threshold, all consistent: answered inline, and nothing is reported.
    const first = await seed(world.sql, [p], 0, INLINE_MAX - 20, ['primary']);
    const both = await seed(world.sql, [p, bk], INLINE_MAX - 20, INLINE_MAX, ['primary', 'backup']);
    const inline = await request(a.url).post('/admin/verify/media').set(auth).send({});
    expect({ status: inline.status, body: inline.body }).toMatchObject({ status: 200 });
    expect(inline.body.consistency).toMatchObject({
      status: 'pass',
      checked: INLINE_MAX,
      problemCount: 0,
      orphans: { primary: 0, backup: 0 },
    });
    expect(inline.body.consistency.async).toBeUndefined();

    // Inject: a version whose content is gone from the primary, one recorded on the backup but
    // absent there, and an unreferenced version object older than the grace period.
    const lost = [...first.keys()][7]!;
    await p.remove(`v/${first.get(lost)}`);
    const notOnBackup = [...both.keys()][3]!;
    await bk.remove(`v/${both.get(notOnBackup)}`);
    const orphan = `v/${randomUUID()}`;
    await bk.put(orphan, Readable.from([Buffer.from('nobody refers to me')]), 19, 'text/plain');
    await seed(world.sql, [p], INLINE_MAX, INLINE_MAX + 5, ['primary']); // now above the threshold
    await new Promise((resolve) => setTimeout(resolve, 3200)); // the orphan passes the grace period

    const started = await request(a.url).post('/admin/verify/media').set(auth).send({});
    expect({ status: started.status, body: started.body }).toMatchObject({ status: 200 }); // the canaries pass; the consistency verdict is the job's
    expect(started.body.consistency).toMatchObject({
      async: true,
      job: { id: expect.any(String), status: 'running', href: expect.stringMatching(/^\/admin\/jobs\//) },
    });
    const href = started.body.consistency.job.href as string;

    const done = await eventually(
      () => request(b.url).get(href).set(auth),
      (r) => r.status === 200 && r.body.status !== 'running',
      120_000,
    );
    expect(done.body).toMatchObject({ kind: 'media.verify', status: 'failed', instanceId: 'vj-a', finishedAt: expect.any(String) });
    const report = done.body.report;
    expect(report).toMatchObject({
      status: 'fail',
      checked: INLINE_MAX + 5,
      legacy: 0,
      problemCount: 2,
      orphans: { primary: 0, backup: 1 },
      unreachable: [],
    });
    expect(report.problems).toEqual(
      expect.arrayContaining([
        { key: lost, version: first.get(lost), backend: 'primary', problem: 'missing' },
        { key: notOnBackup, version: both.get(notOnBackup), backend: 'backup', problem: 'missing' },
      ]),
    );
    expect(report.problems).toHaveLength(2);

    // The audit records the verification; the job stays retrievable afterwards.
    const audit = await request(a.url).get('/admin/audit?limit=5').set(auth);
    expect(audit.body.events.map((e: { action: string }) => e.action)).toContain('verify.media');
    expect((await request(a.url).get(href).set(auth)).body.report.problemCount).toBe(2);
  }, 240_000);
});
