import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import request from 'supertest';
import { loadConfig } from '../../src/config/config.ts';
import { migrate } from '../../src/database/migrator.ts';
import { MinioObjectStore } from '../../src/media/minio-object-store.ts';
import { MIGRATIONS_DIR } from '../../src/service.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { createPgBackRestRepo, type PgBackRestRepo } from '../../support/pgbackrest-repo.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { sha256Hex } from '../../support/common.ts';

const SCRIPT = join(__dirname, '..', '..', 'scripts', 'dr', 'restore-database.sh');
const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

function script(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', [SCRIPT, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env }, timeout: 180_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function sql(url: string, text: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

describe('scripts/dr/restore-database.sh on a real primary with pgBackRest', () => {
  let cluster: PgCluster;
  let repo: PgBackRestRepo;
  let s3: S3ServerHandle;
  let api: TestInstance;
  let env: Record<string, string>;
  const acked = new Map<string, string>();

  const upload = async (key: string) => {
    const body = randomBytes(700);
    const res = await request(api.url).put(`/media/${key}`).send(body);
    expect(res.status).toBe(201);
    acked.set(key, sha256Hex(body));
  };
  const archiveAll = async () => {
    await sql(cluster.primary.url(), 'SELECT pg_switch_wal()');
    await repo.exec(['check']); // waits until the current WAL segment is in the archive
  };
  const expectBack = async (keys: string[]) => {
    for (const key of keys) {
      const res = await request(api.url).get(`/media/${key}`).buffer(true).parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => cb(null, Buffer.concat(chunks)));
      });
      expect({ key, status: res.status, sha: sha256Hex(res.body as Buffer) }).toEqual({ key, status: 200, sha: acked.get(key) });
    }
  };

  beforeAll(async () => {
    cluster = await startPgCluster();
    repo = await createPgBackRestRepo(cluster.primary, cluster.dir);
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    s3 = await startS3Server({ bucket: 'restore-primary' });
    api = await startInstance({ ...mediaEnv('PRIMARY', s3), DATABASE_URL: cluster.primary.url(), MEDIA_CACHE_TTL_SECONDS: '1', HEALTH_TIMEOUT_MS: '500' }, uniquePrefix());
    await upload('r/before-backup');
    await repo.exec(['backup', '--type=full']);
    env = {
      SAV3_API_URL: api.url,
      SAV3_ADMIN_TOKEN: OPERATOR_TOKEN,
      DATABASE_URL: cluster.primary.url(),
      PGDATA: cluster.primary.dataDir,
      ...repo.env,
      ...mediaEnv('PRIMARY', s3),
    };
  }, 90_000);
  afterAll(async () => {
    await api?.stop();
    await s3?.destroy();
    await cluster?.destroy();
    repo?.destroy();
  });

  it('--help prints usage and does nothing; unknown options and a missing --confirm exit 2 and change nothing', async () => {
    const help = await script(['--help'], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: scripts/dr/restore-database.sh');
    expect((await script(['--from-backup', 'latest', '--force'], env)).code).toBe(2);
    const noConfirm = await script(['--from-backup', 'latest'], env);
    expect(noConfirm.code).toBe(2);
    expect(noConfirm.stderr).toContain('without --confirm');
    expect((await script(['--from-backup', 'latest', '--target-time', 'yesterday', '--dry-run'], env)).code).toBe(2);
    expect((await script(['--from-backup', 'latest', '--target-time', '2026-01-01T00:00:00Z', '--target-name', 'x', '--confirm'], env)).code).toBe(2);
    // The server kept running and the data is as it was.
    expect(await sql(cluster.primary.url(), "SELECT count(*)::int AS n FROM media_objects")).toEqual([{ n: 1 }]);
    expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(false);
  });

  it('--dry-run prints the backup and WAL it would use; one that cannot go ahead exits 1', async () => {
    const dry = await script(['--from-backup', 'latest', '--dry-run'], env);
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.stdout.split('\n').find((l) => l.startsWith('plan: '))!.slice(6));
    expect(plan).toMatchObject({ backup: { label: expect.stringMatching(/F$/), type: 'full' }, target: { type: 'end_of_archive' }, wal: { from: expect.stringMatching(/^[0-9A-F]{24}$/), to: expect.stringMatching(/^[0-9A-F]{24}$/) } });
    expect(dry.stdout).toContain('nothing was changed');
    expect((await script(['--from-backup', '20200101-000000F', '--dry-run'], env)).code).toBe(1);
    const early = await script(['--from-backup', 'latest', '--target-time', '2001-01-01T00:00:00Z', '--dry-run'], env);
    expect(early.code).toBe(1);
    expect(early.stderr).toContain('no backup ended before');
  });

  it('a DELETE without WHERE, undone by a restore to a restore point: every acknowledged upload is back; the API answered throughout', async () => {
    await upload('r/after-backup-1');
    await upload('r/after-backup-2');
    expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'before-mistake-1' })).status).toBe(201);
    await sql(cluster.primary.url(), 'DELETE FROM media_objects');
    await archiveAll();
    // While the restore runs, the API keeps answering: writes 503 with Retry-After, health/live 200.
    const seen: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const w = await request(api.url).put('/media/r/during').send('x').catch(() => undefined);
        if (w) seen.push(w.status);
        if (w && w.status === 503) expect(w.headers['retry-after']).toBeDefined();
        expect((await request(api.url).get('/health/live')).status).toBe(200);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const run = await script(['--from-backup', 'latest', '--target-name', 'before-mistake-1', '--confirm'], env);
    polling = false;
    await poller;
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    for (const step of ['read-only on', 'stop PostgreSQL', 'pgbackrest restore', 'start PostgreSQL', 'wait for promotion', 'verify']) expect(run.stdout).toMatch(new RegExp(`step: ${step} \\d+ ms`));
    // Writes before read-only took effect were accepted (they come after the restore point);
    // from the first refusal on, every write was refused with 503, none failed otherwise.
    const firstRefusal = seen.indexOf(503);
    expect(firstRefusal).toBeGreaterThanOrEqual(0);
    expect(seen.slice(0, firstRefusal).every((s) => s === 201)).toBe(true);
    expect(seen.slice(firstRefusal).every((s) => s === 503)).toBe(true);
    expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(true);
    await expectBack(['r/before-backup', 'r/after-backup-1', 'r/after-backup-2']);
    expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'restored' })).status).toBe(200);
    const write = await request(api.url).put('/media/r/after-restore').send('x');
    expect({ status: write.status, body: write.body }).toEqual({ status: 201, body: expect.anything() });
  }, 120_000);

  it('undone by a restore to a time: what came before is back, what came after is reported (content without metadata)', async () => {
    await upload('r/before-target');
    await new Promise((r) => setTimeout(r, 200));
    const target = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 200));
    await upload('r/after-target');
    await sql(cluster.primary.url(), "DELETE FROM media_objects WHERE key LIKE 'r/%'");
    await archiveAll();
    const run = await script(['--from-backup', 'latest', '--target-time', target, '--confirm'], env);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    await expectBack(['r/before-backup', 'r/after-backup-1', 'r/after-backup-2', 'r/before-target']);
    // Reported, not silently lost: the content of the upload after the target (and of any write the
    // first restore accepted before read-only took effect) is listed as content without metadata.
    const orphans = run.stdout.split('\n').filter((l) => l.startsWith('media-orphan: ')).map((l) => JSON.parse(l.slice(14)) as { object: string; backend: string; size: number });
    expect(run.stdout).toContain(`media: ${orphans.length} object(s) uploaded after the target`);
    expect(orphans.every((o) => o.backend === 'primary' && /^v\/[0-9a-f-]{36}$/.test(o.object))).toBe(true);
    const store = new MinioObjectStore(loadConfig({ DATABASE_URL: cluster.primary.url(), ...mediaEnv('PRIMARY', s3) }).mediaPrimary);
    const orphanShas = new Set<string>();
    for (const o of orphans) {
      const chunks: Buffer[] = [];
      for await (const c of await store.get(o.object)) chunks.push(c as Buffer);
      orphanShas.add(sha256Hex(Buffer.concat(chunks)));
    }
    store.close();
    expect(orphanShas.has(acked.get('r/after-target')!)).toBe(true);
    expect((await request(api.url).get('/media/r/after-target')).status).toBe(404);
    expect(await sql(cluster.primary.url(), "SELECT key FROM media_objects WHERE key = 'r/after-target'")).toEqual([]);
  }, 120_000);
});
