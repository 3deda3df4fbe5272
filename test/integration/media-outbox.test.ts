import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import request from 'supertest';
import { BackupReplicator, OUTBOX_LEASE_MS } from '../../src/services/media/backup-replicator.ts';
import type { S3ServerHandle } from '../../support/s3-server.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startMediaWorld, type MediaWorld } from '../support/world.ts';
import { eventually, sleep } from '../../support/common.ts';
import { captureLogger } from '../support/log-capture.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/**
 * Issue 9: one torture run ended with an outbox row still waiting 30 s after every fault healed, so
 * a version written to the backup during a media switch never reached the primary. A row could
 * wait far longer than any fault: a claim whose holder vanished (an instance killed mid-copy, or a
 * claim whose answer was lost when PostgreSQL cut the connection, or a copy that could not record
 * its result or its retry while PostgreSQL was down) held the row for a 60 s lease; a row that had
 * failed a few times backed off up to 30 s; and a row whose content was gone from every backend
 * that should hold it was retried forever, with nothing but a backlog count to show for it.
 * Real S3 servers (atomic PUT), PostgreSQL and Redis.
 */
describe('continuous-backup outbox: every row is applied or retired, none waits on a vanished claim', () => {
  let world: MediaWorld;
  let primary: S3ServerHandle;
  let api: TestInstance;
  let sql: pg.Client;

  beforeAll(async () => {
    world = await startMediaWorld({
      bucket: 'ob-primary',
      backupBucket: 'ob-backup',
      env: { MEDIA_CONTINUOUS_BACKUP: 'true', HEALTH_INTERVAL_MS: '300', MEDIA_S3_TIMEOUT_MS: '2000' },
    });
    sql = world.sql;
    primary = world.s3;
    api = await world.start();
  });
  afterAll(async () => {
    await world?.destroy();
  });

  const store = (b: 'primary' | 'backup') => api.service.objectStores.get(b)!;
  const versionOf = async (key: string) =>
    (await sql.query<{ v: string }>('SELECT version::text AS v FROM media_objects WHERE key = $1', [key])).rows[0]!.v;
  const outboxRows = async () =>
    (await sql.query<{ version: string; target: string }>('SELECT version::text AS version, target FROM media_outbox ORDER BY id')).rows;
  const onPrimary = (version: string) => () => store('primary').stat(`v/${version}`);
  const put = async (key: string, body: string) => {
    const res = await request(api.url).put(`/media/${key}`).send(body);
    expect(res.status).toBe(201);
    return { backend: res.body.backend as string, version: await versionOf(key) };
  };
  const switchTo = async (to: 'primary' | 'backup') =>
    expect((await request(api.url).post('/admin/media/switch').set(auth).send({ to })).status).toBe(200);

  it('a claim whose holder vanished (killed instance, or claim answer lost with the connection) delays the copy by one short lease, not 60 s', async () => {
    // The sequence: the primary S3 is down, media switches to the backup, a write lands there.
    await primary.stop();
    await switchTo('backup');
    const { backend, version } = await put('ob/vanished', 'written on the backup while the primary was down');
    expect(backend).toBe('backup');
    expect(await outboxRows()).toEqual([{ version, target: 'primary' }]);
    // Another holder claims the row and vanishes: its claim committed, nothing will ever complete it.
    // (The claim may be held for a moment by this instance's own replicator: take it once that ends.)
    const claimed = await eventually(
      () => api.service.media.versions.claimOutbox(16, OUTBOX_LEASE_MS, randomUUID()),
      (tasks) => tasks.length === 1,
      10_000,
      100,
    );
    expect(claimed.map((t) => t.id)).toEqual([version]);

    await primary.start();
    const healed = Date.now();
    await switchTo('primary');
    const copied = await eventually(onPrimary(version), (s) => s?.size === 48, 25_000, 200);
    expect(copied?.size).toBe(48);
    // Before: the vanished claim held the row for 60 s (the torture checks 30 s after the heal).
    expect(Date.now() - healed).toBeLessThan(20_000);
    await eventually(outboxRows, (rows) => rows.length === 0, 3000);
    const backends = (await sql.query('SELECT backends FROM media_versions WHERE id = $1', [version])).rows[0].backends;
    expect([...backends].sort()).toEqual(['backup', 'primary']);
  }, 60_000);

  it('only the holder of a claim reschedules, renews or retires its row: a holder whose lease lapsed cannot disturb the next', async () => {
    await primary.stop();
    await switchTo('backup');
    const { version } = await put('ob/tokens', 'two holders');
    const versions = api.service.media.versions;
    // The first holder's lease lapses at once (a holder stalled past its lease)...
    const first = randomUUID();
    const stale = await eventually(
      () => versions.claimOutbox(16, 1, first),
      (tasks) => tasks.length === 1,
      10_000,
      100,
    );
    await sleep(20);
    // ...and the row is claimed again.
    const second = randomUUID();
    const fresh = await versions.claimOutbox(16, 10_000, second);
    expect(fresh.map((t) => [t.taskId, t.id])).toEqual([[stale[0]!.taskId, version]]);
    const taskId = fresh[0]!.taskId;
    const row = async () =>
      (
        await sql.query<{ token: string; wait: number; failures: number }>(
          'SELECT claim_token::text AS token, EXTRACT(EPOCH FROM (lease_until - now()))::float8 AS wait, failures FROM media_outbox WHERE id = $1',
          [taskId],
        )
      ).rows[0];
    await versions.retryOutbox(taskId, first, 'stale holder', 60_000, true);
    await versions.renewOutbox(first, [taskId], 60_000);
    expect(await versions.retireOutbox(taskId, first, 'content_missing', 'stale holder')).toBe(false);
    const after = await row();
    expect(after).toMatchObject({ token: second, failures: 0 });
    expect(after!.wait).toBeLessThanOrEqual(10);
    // The holder itself can.
    await versions.retryOutbox(taskId, second, 'holder', 0);
    expect(await row()).toMatchObject({ token: null, failures: 0 });
    await primary.start();
    await switchTo('primary');
    await eventually(outboxRows, (rows) => rows.length === 0, 15_000, 200);
  }, 60_000);

  it('a row that failed many times is retried within a few seconds of its target returning, and shows as stuck until then', async () => {
    await primary.stop();
    await switchTo('backup');
    const { version } = await put('ob/backoff', 'failed many times');
    // A long primary outage: the row has been tried (and failed) a dozen times, and is due again.
    await eventually(
      async () =>
        (
          await sql.query(
            `UPDATE media_outbox SET attempts = 12, last_error = 'connect ECONNREFUSED', lease_until = now() WHERE version = $1 AND claim_token IS NULL`,
            [version],
          )
        ).rowCount,
      (n) => n === 1,
      5000,
      50,
    );
    // One more attempt fails (a replicator that has not yet seen the probes fail tries it anyway).
    const blind = new BackupReplicator({
      versions: api.service.media.versions,
      stores: api.service.objectStores,
      logger: captureLogger().logger,
      intervalMs: 60_000,
    });
    const row = await eventually(
      async () => {
        await blind.drain();
        return (
          await sql.query<{ attempts: number; wait: number; claimed: boolean }>(
            'SELECT attempts, EXTRACT(EPOCH FROM (lease_until - now()))::float8 AS wait, claim_token IS NOT NULL AS claimed FROM media_outbox WHERE version = $1',
            [version],
          )
        ).rows[0]!;
      },
      // Not while a claim holds it (the instance's own replicator may be trying it too): its lease
      // (OUTBOX_LEASE_MS) is not the retry delay (seen once: 10 s).
      (r) => r.attempts >= 13 && !r.claimed,
      5000,
      50,
    );
    // Before: 250 ms * 2^12, capped at 30 s.
    expect(row.wait).toBeLessThanOrEqual(5.5);
    // The health report and the metric say so, not just "a backlog of 1".
    const health = await eventually(
      async () => (await request(api.url).get('/health/media')).body,
      (b) => b.backup?.stuck === 1,
      5000,
      200,
    );
    expect(health).toMatchObject({ status: 'degraded', backup: { backlog: 1, stuck: 1, retired: 0 } });
    expect((await request(api.url).get('/metrics')).text).toMatch(/^sav3_media_backup_stuck 1$/m);

    await primary.start();
    const healed = Date.now();
    await switchTo('primary');
    expect((await eventually(onPrimary(version), (s) => s?.size === 17, 15_000, 200))?.size).toBe(17);
    // Before: 250 ms * 2^12 capped at 30 s, counted from the last failure.
    expect(Date.now() - healed).toBeLessThan(9000);
    const after = await eventually(
      async () => (await request(api.url).get('/health/media')).body,
      (b) => b.backup?.stuck === 0 && b.backup?.backlog === 0,
      5000,
      200,
    );
    expect(after.status).toBe('healthy');
  }, 60_000);

  it('a row whose content is gone from every backend that should hold it is retired with its reason, blocks no other row, and is reported until resolved', async () => {
    await switchTo('backup');
    await primary.stop();
    const lost = await put('ob/lost', 'content that will be lost');
    // The version's only copy disappears (a bucket restored from an older snapshot, an operator's
    // mistake): no retry can ever copy it.
    await store('backup').remove(`v/${lost.version}`);
    // A later row must not wait behind it.
    const fine = await put('ob/fine', 'copied regardless');
    await primary.start();
    await switchTo('primary');
    expect((await eventually(onPrimary(fine.version), (s) => s?.size === 17, 10_000, 200))?.size).toBe(17);

    // Retired after a few definitive failures, with a recorded reason, not retried forever.
    await eventually(outboxRows, (rows) => rows.length === 0, 15_000, 200);
    const retired = (
      await sql.query('SELECT version::text AS version, key, target, reason, attempts, last_error FROM media_outbox_retired')
    ).rows;
    expect(retired).toEqual([
      {
        version: lost.version,
        key: 'ob/lost',
        target: 'primary',
        reason: 'content_missing',
        attempts: expect.any(Number),
        last_error: expect.stringContaining('backup'),
      },
    ]);
    expect(api.logs()).toContain('continuous backup gave up on a version');
    // Health, metrics and the RPO exposure keep saying so while the version is current and not backed up.
    const health = await eventually(
      async () => (await request(api.url).get('/health/media')).body,
      (b) => b.backup?.retired === 1,
      5000,
      200,
    );
    expect(health).toMatchObject({ status: 'degraded', backup: { backlog: 0, retired: 1 } });
    const metrics = (await request(api.url).get('/metrics')).text;
    expect(metrics).toMatch(/^sav3_media_backup_retired 1$/m);
    expect(Number(/^sav3_rpo_exposure_seconds\{component="media"\} ([\d.]+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);

    // Resolved once the key moves on (an overwrite): the report clears by itself.
    await put('ob/lost', 'written again');
    const cleared = await eventually(
      async () => (await request(api.url).get('/health/media')).body,
      (b) => b.backup?.retired === 0 && b.backup?.backlog === 0,
      10_000,
      200,
    );
    expect(cleared.status).toBe('healthy');
    await sleep(100);
  }, 60_000);
});
