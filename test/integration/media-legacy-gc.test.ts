import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import pg from 'pg';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { mediaEnv, ownDatabase, startInstance, type TestInstance } from '../support/instance.ts';
import { eventually, sha256Hex } from '../../support/common.ts';

const GRACE_MS = 2000;
const pastGrace = () => new Promise((resolve) => setTimeout(resolve, GRACE_MS + 700));

/** Objects of the old layout: content stored under the user's key by an earlier release. */
describe('old-layout objects of deleted or overwritten keys are garbage-collected, and only those', () => {
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let api: TestInstance;
  let db: Awaited<ReturnType<typeof ownDatabase>>;
  let sql: pg.Client;
  let stores: ObjectStore[];

  beforeAll(async () => {
    db = await ownDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    primary = await startS3Server({ bucket: 'lg-primary' });
    backup = await startS3Server({ bucket: 'lg-backup' });
    // The collector runs only when the test calls it.
    api = await startInstance({
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', primary),
      ...mediaEnv('BACKUP', backup),
      MEDIA_GC_GRACE_SECONDS: String(GRACE_MS / 1000),
      MEDIA_CACHE_TTL_SECONDS: '1',
      MEDIA_GC_INTERVAL_MS: '3600000',
    });
    stores = [api.service.objectStores.get('primary')!, api.service.objectStores.get('backup')!];
  });
  afterAll(async () => {
    await api?.stop();
    await sql?.end();
    await primary?.destroy();
    await backup?.destroy();
    await db?.drop();
  });

  const legacy = async (key: string, body: string) => {
    for (const store of stores) await store.put(key, Readable.from([Buffer.from(body)]), body.length, 'text/plain');
    await sql.query(
      `INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at) VALUES ($1, $2, $3, 'text/plain', 'primary', now())`,
      [key, body.length, sha256Hex(body)],
    );
  };
  const present = async (name: string) => Promise.all(stores.map(async (s) => (await s.stat(name)) !== undefined));
  const garbage = async () =>
    (await sql.query(`SELECT key FROM media_legacy_garbage ORDER BY key`)).rows.map((r: { key: string }) => r.key);
  const collect = () => api.service.media.gc.collect();

  it('DELETE of an old-layout key leaves its object for the grace period (a reader may still stream it), then the collector removes it on every backend', async () => {
    await legacy('old/deleted', 'old layout, deleted');
    expect((await request(api.url).get('/media/old/deleted')).text).toBe('old layout, deleted');
    expect((await request(api.url).delete('/media/old/deleted')).status).toBe(204);
    expect((await request(api.url).get('/media/old/deleted')).status).toBe(404);
    expect(await garbage()).toEqual(['old/deleted']);
    await collect();
    expect(await present('old/deleted')).toEqual([true, true]); // within the grace period
    await pastGrace();
    await collect();
    expect(await present('old/deleted')).toEqual([false, false]);
    expect(await garbage()).toEqual([]);
    expect((await request(api.url).head('/media/old/deleted')).status).toBe(404);
  });

  it('an overwrite of an old-layout key by PUT leaves the old object to the collector too; the new version stays', async () => {
    await legacy('old/overwritten', 'old layout, overwritten');
    expect((await request(api.url).put('/media/old/overwritten').send('new content')).status).toBe(201);
    expect(await garbage()).toEqual(['old/overwritten']);
    await pastGrace();
    await collect();
    expect(await present('old/overwritten')).toEqual([false, false]);
    const res = await request(api.url).get('/media/old/overwritten');
    expect({ status: res.status, text: res.text, etag: res.headers.etag }).toEqual({
      status: 200,
      text: 'new content',
      etag: `"${sha256Hex('new content')}"`,
    });
    // A write to a versioned key (or to a new key) leaves nothing for the old-layout collector.
    expect((await request(api.url).put('/media/old/overwritten').send('newer content')).status).toBe(201);
    expect((await request(api.url).put('/media/fresh/key').send('fresh')).status).toBe(201);
    expect((await request(api.url).delete('/media/fresh/key')).status).toBe(204);
    expect(await garbage()).toEqual([]);
  });

  it('never removes an object a row still references: a live old-layout row (say, from a restored database), or a version of that name', async () => {
    await legacy('old/live', 'still referenced');
    const { rows } = await sql.query(`SELECT version::text AS id FROM media_objects WHERE key = 'old/overwritten'`);
    const versionName = `v/${rows[0].id}`;
    expect(await present(versionName)).toEqual([true, false]);
    // Entries that a restore or an earlier state could have left behind, well past the grace period.
    await sql.query(
      `INSERT INTO media_legacy_garbage (key, at) VALUES ('old/live', now() - interval '1 hour'), ($1, now() - interval '1 hour')`,
      [versionName],
    );
    await collect();
    expect(await present('old/live')).toEqual([true, true]);
    expect((await present(versionName))[0]).toBe(true);
    expect(await garbage()).toEqual([]); // forgotten, not retried forever
    expect((await request(api.url).get('/media/old/live')).text).toBe('still referenced');
    expect((await request(api.url).get('/media/old/overwritten')).text).toBe('newer content');
  });

  it('a backend that is down keeps the entry: its copy is removed once it is back', async () => {
    await legacy('old/while-down', 'removed in two steps');
    expect((await request(api.url).delete('/media/old/while-down')).status).toBe(204);
    await pastGrace();
    await backup.stop();
    try {
      await collect();
      expect(await stores[0]!.stat('old/while-down')).toBeUndefined();
      expect(await garbage()).toEqual(['old/while-down']);
    } finally {
      await backup.start();
    }
    expect(await stores[1]!.stat('old/while-down')).toBeDefined();
    // The next runs (once the probes see the backup back) finish the job.
    await eventually(
      async () => (await collect(), await garbage()),
      (g) => g.length === 0,
      8000,
    );
    expect(await present('old/while-down')).toEqual([false, false]);
    expect(await garbage()).toEqual([]);
  });

  it('a key deleted, written again and deleted again before the collector ran still has its old-layout object removed', async () => {
    await legacy('old/revived', 'old layout, revived');
    expect((await request(api.url).delete('/media/old/revived')).status).toBe(204);
    expect((await request(api.url).put('/media/old/revived').send(`v-${randomUUID()}`)).status).toBe(201);
    expect((await request(api.url).delete('/media/old/revived')).status).toBe(204);
    await pastGrace();
    await collect();
    expect(await present('old/revived')).toEqual([false, false]);
  });
});
