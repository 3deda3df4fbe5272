import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import type pg from 'pg';
import request from 'supertest';
import type { S3ServerHandle } from '../../support/s3-server.ts';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startMediaWorld, type MediaWorld } from '../support/world.ts';
import { eventually, sha256Hex, sleep } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const GRACE_MS = 2000;

/** What a client saw of a GET: the status, the bytes, and whether the transfer ended cleanly. */
interface Fetched {
  status?: number;
  etag?: string;
  length?: number;
  body: Buffer;
  clean: boolean;
}

function rawGet(base: string, key: string): Promise<Fetched> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const out: Fetched = { body: Buffer.alloc(0), clean: false };
    const done = (clean: boolean) => {
      out.body = Buffer.concat(chunks);
      out.clean = clean;
      resolve(out);
    };
    const req = http.get(`${base}/media/${key}`, { agent: false }, (res) => {
      out.status = res.statusCode;
      out.etag = res.headers.etag;
      out.length = Number(res.headers['content-length']);
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => done(res.complete));
      res.once('aborted', () => done(false));
      res.once('error', () => done(false));
    });
    req.once('error', () => done(false));
  });
}

/**
 * Issue 9, findings of an outside attack on media integrity: a corrupt copy served under the
 * acknowledged ETag (F2), a consistency pass blind to same-size corruption and unable to repair
 * a missing copy (F3), one malformed name under v/ breaking every orphan sweep (F4), and the sweep
 * deleting live old-layout objects named like versions (F5). Real S3 servers and PostgreSQL; the
 * backup's copy is corrupted on the S3 server's disk.
 */
describe('media integrity: corrupt or missing copies are never served as good, found, and repaired', () => {
  let world: MediaWorld;
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let api: TestInstance;
  let sql: pg.Client;

  beforeAll(async () => {
    world = await startMediaWorld({
      bucket: 'mi-primary',
      backupBucket: 'mi-backup',
      env: {
        MEDIA_CONTINUOUS_BACKUP: 'true',
        HEALTH_INTERVAL_MS: '300',
        MEDIA_S3_TIMEOUT_MS: '2000',
        MEDIA_GC_GRACE_SECONDS: String(GRACE_MS / 1000),
        MEDIA_GC_INTERVAL_MS: '3600000',
      },
    });
    sql = world.sql;
    primary = world.s3;
    backup = world.s3Backup!;
    api = await world.start();
  });
  afterAll(async () => {
    await world?.destroy();
  });

  const store = (b: 'primary' | 'backup'): ObjectStore => api.service.objectStores.get(b)!;
  const objectFile = (s3: S3ServerHandle, name: string) => path.join(s3.directory, s3.bucket, `${name}._S3rver_object`);
  const version = async (key: string) =>
    (await sql.query<{ v: string }>('SELECT version::text AS v FROM media_objects WHERE key = $1', [key])).rows[0]!.v;
  const backends = async (v: string) =>
    [...(await sql.query<{ b: string[] }>('SELECT backends AS b FROM media_versions WHERE id = $1', [v])).rows[0]!.b].sort();
  const outbox = async (v: string) =>
    (await sql.query<{ target: string }>('SELECT target FROM media_outbox WHERE version = $1', [v])).rows.map((r) => r.target);
  /** PUTs `body`, waits until the continuous backup copied it, returns its version. */
  const stored = async (key: string, body: Buffer) => {
    expect((await request(api.url).put(`/media/${key}`).set('Content-Type', 'application/octet-stream').send(body)).status).toBe(201);
    const v = await version(key);
    await eventually(
      () => backends(v),
      (b) => b.length === 2,
      10_000,
      50,
    );
    return v;
  };
  /** Until the version is on both backends again (the replicator copied it back). */
  const repaired = (v: string) =>
    eventually(
      () => backends(v),
      (b) => b.length === 2,
      15_000,
      100,
    );
  /** Flips one byte of the backup's copy on the S3 server's disk: same size, other sha256. */
  const corruptOnBackup = async (v: string, at: number) => {
    const file = objectFile(backup, `v/${v}`);
    const bytes = await fs.readFile(file);
    bytes[at] = bytes[at]! ^ 0xff;
    await fs.writeFile(file, bytes);
  };
  const backupHash = async (v: string) => sha256Hex(await fs.readFile(objectFile(backup, `v/${v}`)).catch(() => Buffer.alloc(0)));
  const verify = (body: object) => request(api.url).post('/admin/verify/media').set(auth).send(body);
  const metric = async (name: string) => {
    const text = (await request(api.url).get('/metrics')).text;
    return Number(new RegExp(`^${name.replace(/[{}"=]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? 'NaN');
  };

  describe('F2: a GET never completes with bytes that do not hash to the ETag', () => {
    for (const [label, size] of [
      ['a large version (many chunks)', 600 * 1024],
      ['a small version (content-cache size)', 100],
    ] as const) {
      it(`${label}: corrupt on the backup with the primary down → the transfer fails, the copy is dropped and recopied`, async () => {
        const key = `mi/f2-${size}`;
        const body = randomBytes(size);
        const v = await stored(key, body);
        await corruptOnBackup(v, size - 7);
        const failuresBefore = (await metric('sav3_media_integrity_failures_total{backend="backup"}')) || 0;

        await primary.stop();
        try {
          const got = await rawGet(api.url, key);
          // Before: 200, complete, ETag = the acknowledged sha256, body hashing to something else.
          expect(got.clean).toBe(false);
          expect(got.body.length).toBeLessThan(size);
          if (got.status !== undefined) expect(got.etag).toBe(`"${sha256Hex(body)}"`);
          // A second read (the content cache must not have kept the corrupt bytes) fails too.
          const again = await rawGet(api.url, key);
          expect(again.clean).toBe(false);
          expect(await metric('sav3_media_integrity_failures_total{backend="backup"}')).toBeGreaterThanOrEqual(failuresBefore + 2);
          // The backup's copy is no longer trusted: the metadata drops it and the outbox copies it again.
          expect(
            await eventually(
              () => backends(v),
              (b) => !b.includes('backup'),
              5000,
              50,
            ),
          ).toEqual(['primary']);
          expect(await outbox(v)).toEqual(['backup']);
        } finally {
          await primary.start();
        }
        // The replicator repairs the copy from the primary.
        await repaired(v);
        expect(await backupHash(v)).toBe(sha256Hex(body));
        await primary.stop();
        try {
          const good = await rawGet(api.url, key);
          expect(good).toMatchObject({ status: 200, clean: true, etag: `"${sha256Hex(body)}"` });
          expect(sha256Hex(good.body)).toBe(sha256Hex(body));
        } finally {
          await primary.start();
        }
      }, 60_000);
    }
  });

  describe('F3: the consistency pass finds same-size corruption (deep) and missing copies, and queues their repair', () => {
    it('deep verify reports a same-size corruption as corrupt (the size-only pass cannot), then the copy is repaired', async () => {
      const key = 'mi/f3-corrupt';
      const body = randomBytes(40 * 1024);
      const v = await stored(key, body);
      await corruptOnBackup(v, 123);

      const shallow = await verify({});
      expect(shallow.body.consistency).toMatchObject({ deep: false, corrupt: 0 });
      expect(shallow.body.consistency.problems).toEqual([]);

      const deep = await verify({ deep: true });
      expect(deep.status).toBe(503);
      expect(deep.body.consistency).toMatchObject({ status: 'fail', deep: true, corrupt: 1, repairQueued: 1 });
      expect(deep.body.consistency.problems).toEqual([{ key, version: v, backend: 'backup', problem: 'corrupt' }]);
      await repaired(v);
      expect(await backupHash(v)).toBe(sha256Hex(body));
      const after = await verify({ deep: true });
      expect(after.body.consistency).toMatchObject({ status: 'pass', corrupt: 0, problemCount: 0 });
    }, 60_000);

    it('a copy the metadata places on the backup but missing there leaves the backups, is counted in the backlog, and is copied again', async () => {
      const key = 'mi/f3-missing';
      const body = randomBytes(1000);
      const v = await stored(key, body);
      // The backup loses the copy while its probes still pass.
      await store('backup').remove(`v/${v}`);
      // Before: a sync found nothing to copy (the version still listed the backup), no outbox row.
      await backup.stop();
      try {
        const res = await verify({});
        // The backup is unreachable now: the pass says so, and queues nothing it cannot know.
        expect(res.body.consistency.status).not.toBe('pass');
        expect(await backends(v)).toEqual(['backup', 'primary']);
      } finally {
        await backup.start();
      }
      // Keep the replicator from repairing before the backlog is observed: the primary is down.
      await primary.stop();
      try {
        const res = await verify({});
        expect(res.body.consistency.problems).toEqual(expect.arrayContaining([{ key, version: v, backend: 'backup', problem: 'missing' }]));
        expect(res.body.consistency.repairQueued).toBeGreaterThanOrEqual(1);
        expect(await backends(v)).toEqual(['primary']);
        expect(await outbox(v)).toEqual(['backup']);
        const backlog = await eventually(
          () => metric('sav3_media_backup_backlog'),
          (n) => n >= 1,
          5000,
          100,
        );
        expect(backlog).toBeGreaterThanOrEqual(1);
        // A sync from the primary now sees the version as missing on the backup.
        const dry = await request(api.url).post('/admin/media/sync').set(auth).send({ from: 'primary', to: 'backup', dryRun: true });
        expect(dry.body.items.map((i: { key: string }) => i.key)).toContain(key);
      } finally {
        await primary.start();
      }
      await repaired(v);
      expect(await store('backup').stat(`v/${v}`)).toMatchObject({ size: 1000 });
      expect(await outbox(v)).toEqual([]);
      expect((await verify({ deep: true })).body.consistency).toMatchObject({ status: 'pass', problemCount: 0 });
    }, 60_000);

    it('verify refuses an unknown body field (400)', async () => {
      expect((await verify({ deep: 'yes' })).status).toBe(400);
      expect((await verify({ sample: 3 })).status).toBe(400);
    });
  });

  describe('F4/F5: the orphan sweep', () => {
    const put = (s: ObjectStore, name: string, body: string) => s.put(name, Readable.from([Buffer.from(body)]), body.length, 'text/plain');

    it('reports an object under v/ that is not a version name as foreign, keeps it, and still removes real orphans', async () => {
      const foreign = 'v/0000000000000000000000000000000000aa';
      const upper = 'v/AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA';
      const orphan = 'v/22222222-2222-4222-8222-222222222222';
      for (const s of [store('primary'), store('backup')]) {
        await put(s, foreign, 'not a version');
        await put(s, upper, 'not a version either');
        await put(s, orphan, 'unreferenced version');
      }
      await sleep(GRACE_MS + 700);
      // Before: 22P02 invalid input syntax for type uuid, on every sweep.
      const removed = await api.service.media.gc.sweepOrphans();
      expect(removed).toEqual({ primary: 1, backup: 1 });
      for (const s of [store('primary'), store('backup')]) {
        expect(await s.stat(foreign)).toBeDefined();
        expect(await s.stat(upper)).toBeDefined();
        expect(await s.stat(orphan)).toBeUndefined();
      }
      // Before: the failing orphan listing made verify report both backends unreachable.
      const res = await verify({});
      expect(res.body.consistency.unreachable).toEqual([]);
      expect(res.body.consistency.foreign).toEqual({ primary: 2, backup: 2 });
      for (const s of [store('primary'), store('backup')]) {
        await s.remove(foreign);
        await s.remove(upper);
      }
    }, 30_000);

    it('keeps a live old-layout object whose key looks like a version name', async () => {
      const key = 'v/11111111-1111-1111-1111-111111111111';
      const body = 'old layout, named like a version';
      for (const s of [store('primary'), store('backup')]) await put(s, key, body);
      await sql.query(
        `INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at) VALUES ($1, $2, $3, 'text/plain', 'primary', now())`,
        [key, body.length, sha256Hex(body)],
      );
      await sleep(GRACE_MS + 700);
      await api.service.media.gc.sweepOrphans();
      // Before: the sweep removed it and GET answered 503.
      for (const s of [store('primary'), store('backup')]) expect(await s.stat(key)).toBeDefined();
      const res = await request(api.url).get(`/media/${key}`);
      expect(res.status).toBe(200);
      expect(res.text).toBe(body);
    }, 30_000);
  });
});
