import { sql } from '../support/dr-scripts.ts';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import type { PgCluster } from '../../support/pg-cluster.ts';
import { createPgBackRestRepo, type PgBackRestRepo } from '../../support/pgbackrest-repo.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { startClusterWorld, type ClusterWorld } from '../support/world.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { startWorker, type TestWorker } from '../support/worker.ts';
import { eventually } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

const SCRIPTS = join(__dirname, '..', '..', 'scripts', 'dr');
function runScript(name: string, args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [join(SCRIPTS, name), ...args],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 110_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

describe('backups with pgBackRest against a real primary with a real archive_command', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let repo: PgBackRestRepo;
  let api: TestInstance;
  let workers: TestWorker[] = [];
  let scratch: string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'sav3-scratch-'));
    // A leftover of a worker that died mid-validation (its pid is gone): removed when a worker starts.
    mkdirSync(join(scratch, 'v-999999-deadbeef', 'data'), { recursive: true });
    writeFileSync(join(scratch, 'v-999999-deadbeef', 'data', 'PG_VERSION'), '15\n');
    world = await startClusterWorld({
      bucket: 'bk-primary',
      backupBucket: 'bk-backup',
      replica: false,
      prepare: async (c) => {
        repo = await createPgBackRestRepo(c.primary, c.dir);
      },
      env: {
        MEDIA_CONTINUOUS_BACKUP: 'true',
        BACKUP_SCRATCH_DIR: scratch,
        BACKUP_STATUS_INTERVAL_MS: '60000',
        PGBACKREST_INFO_CACHE_MS: '0',
      },
    });
    cluster = world.cluster;
    const env = { ...world.env, ...repo.env };
    api = await world.start({ ...repo.env, INSTANCE_ID: 'bk-api' });
    workers = [
      await startWorker({ ...env, INSTANCE_ID: 'bk-w1' }, world.prefix),
      await startWorker({ ...env, INSTANCE_ID: 'bk-w2' }, world.prefix),
    ];
  }, 90_000);
  afterAll(async () => {
    for (const w of workers) await w.stop();
    await world?.destroy();
    repo?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  const waitJob = async (id: string, timeoutMs = 60_000) =>
    eventually(
      async () => (await request(api.url).get(`/admin/jobs/${id}`).set(viewer)).body,
      (job) => job.status === 'succeeded' || job.status === 'failed',
      timeoutMs,
    );

  /** Validation restores a worker has timed (its restore-phase histogram count; none yet is 0). */
  const restores = async (w: TestWorker) =>
    Number(/sav3_backup_restore_seconds_count\{phase="restore"\} (\d+)/.exec((await request(w.url).get('/metrics')).text)?.[1] ?? 0);

  it('a starting worker removed the scratch cluster a dead worker left', () => {
    expect(existsSync(join(scratch, 'v-999999-deadbeef'))).toBe(false);
  });

  it('the worker serves only its own health and metrics', async () => {
    const w = workers[0]!;
    expect((await request(w.url).get('/health/live')).status).toBe(200);
    const ready = await request(w.url).get('/health/ready');
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toMatchObject({ redis: 'healthy' });
    expect((await request(w.url).get('/metrics')).text).toContain('sav3_rpo_exposure_seconds');
    expect((await request(w.url).get('/admin/backups').set(auth)).status).toBe(404);
    expect((await request(w.url).put('/media/x').send('x')).status).toBe(404);
  });

  it('GET /admin/backups before any backup: an empty list and the archiving status', async () => {
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ stanza: 'main', backups: [], archiving: { available: true, archiveMode: 'on', failing: false } });
  });

  it('POST /admin/backups: 400 on a bad type, 403 for a viewer', async () => {
    expect((await request(api.url).post('/admin/backups').set(auth).send({ type: 'weekly' })).status).toBe(400);
    expect((await request(api.url).post('/admin/backups').set(auth).send({ type: 'full', extra: 1 })).status).toBe(400);
    expect((await request(api.url).post('/admin/backups').set(viewer).send({ type: 'full' })).status).toBe(403);
  });

  it('RPO exposure grows while committed writes are not archived and falls to 0 once they are', async () => {
    const inventory = api.service.backups.inventory;
    // The service writes too (audit, jobs): a write of its own after a switch is honestly exposed
    // until the next switch, so every attempt switches the segment before it reads.
    const switchedAndRead = async () => {
      await sql(cluster.primary.url(), 'SELECT pg_switch_wal()');
      await new Promise((r) => setTimeout(r, 200));
      return inventory.archiver().catch(() => ({ rpoExposureSeconds: null }));
    };
    await eventually(switchedAndRead, (a) => a.rpoExposureSeconds === 0, 10_000);
    await inventory.archiver();
    await sql(cluster.primary.url(), 'CREATE TABLE IF NOT EXISTS rpo_probe (x int); INSERT INTO rpo_probe VALUES (1)');
    await new Promise((r) => setTimeout(r, 1100));
    const exposed = await inventory.archiver();
    expect(exposed.rpoExposureSeconds).toBeGreaterThanOrEqual(1);
    expect((await request(api.url).get('/metrics')).text).toMatch(/sav3_rpo_exposure_seconds\{component="database"\} [1-9]/);
    const archived = await eventually(switchedAndRead, (a) => a.rpoExposureSeconds === 0, 10_000);
    expect(archived.rpoExposureSeconds).toBe(0);
    expect((await request(api.url).get('/metrics')).text).toMatch(/sav3_rpo_exposure_seconds\{component="database"\} 0/);
  }, 30_000);

  it('POST /admin/database/restore-point names a point in the WAL (201, audited); bad names 400', async () => {
    const res = await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'before-test-cleanup' });
    expect(res.status).toBe(201);
    expect(res.body.restorePoint).toMatchObject({ name: 'before-test-cleanup', lsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/) });
    for (const name of ['', 'a b', 'x'.repeat(64), "x';drop"]) {
      expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name })).status).toBe(400);
    }
    expect((await request(api.url).post('/admin/database/restore-point').set(viewer).send({ name: 'x' })).status).toBe(403);
  });

  // Every test above makes no backup: the empty list holds whichever of them runs. The tests below
  // share one full backup made by their own set-up, so each can run alone.
  describe('once a full backup exists', () => {
    let firstFull: string;
    beforeAll(async () => {
      const res = await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' });
      if (res.status !== 202) throw new Error(`the set-up's full backup was refused: ${res.status} ${JSON.stringify(res.body)}`);
      const job = await waitJob(res.body.job.id);
      if (job.status !== 'succeeded') throw new Error(`the set-up's full backup failed: ${JSON.stringify(job.error)}`);
      firstFull = job.result.label;
    }, 90_000);

    it('POST /admin/backups runs a full backup on one worker (202, a second request 409), then lists it', async () => {
      const first = await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' });
      expect(first.status).toBe(202);
      expect(first.body.job).toMatchObject({ kind: 'backup', status: 'queued', href: `/admin/jobs/${first.body.job.id}` });
      const second = await request(api.url).post('/admin/backups').set(auth).send({ type: 'incr' });
      expect(second.status).toBe(409);
      expect(second.body.error.job.id).toBe(first.body.job.id);
      const job = await waitJob(first.body.job.id);
      expect(job).toMatchObject({ status: 'succeeded', result: { type: 'full', label: expect.stringMatching(/^\d{8}-\d{6}F$/) } });
      expect(['bk-w1', 'bk-w2']).toContain(job.instanceId);
      const label: string = job.result.label;
      expect(label).not.toBe(firstFull);
      const list = await request(api.url).get('/admin/backups').set(viewer);
      const listed = list.body.backups.find((b: { label: string }) => b.label === label);
      expect(listed).toMatchObject({
        label,
        type: 'full',
        error: false,
        sizeBytes: expect.any(Number),
        wal: { start: expect.any(String), stop: expect.any(String) },
      });
      expect(list.body.archive.min).toMatch(/^[0-9A-F]{24}$/);
      await api.service.backups.inventory.sample();
      const metrics = (await request(api.url).get('/metrics')).text;
      const stop = Date.parse(listed.stoppedAt) / 1000;
      expect(metrics).toContain(`sav3_backup_last_success_timestamp_seconds{type="full"} ${stop}`);
      // A type never backed up reads 0; otherwise its newest stop (another test may run a diff first).
      const diffs = list.body.backups
        .filter((b: { type: string }) => b.type === 'diff')
        .map((b: { stoppedAt: string }) => Date.parse(b.stoppedAt) / 1000);
      expect(metrics).toContain(`sav3_backup_last_success_timestamp_seconds{type="diff"} ${diffs.length ? Math.max(...diffs) : 0}`);
      // Audited with the job.
      const audit = await request(api.url).get('/admin/audit?limit=20').set(viewer);
      expect(audit.body.events.some((e: { action: string; result: string }) => e.action === 'backup.start' && e.result === 'success')).toBe(
        true,
      );
      expect(audit.body.events.some((e: { action: string; result: string }) => e.action === 'backup.start' && e.result === 'refused')).toBe(
        true,
      );
    }, 90_000);

    it('a validation restore of the latest backup passes every check, stores its report and leaves nothing behind', async () => {
      // Media uploaded before the backup is copied to the backup bucket (continuous backup).
      for (let i = 0; i < 3; i += 1) expect((await request(api.url).put(`/media/val/${i}`).send(randomBytes(500))).status).toBe(201);
      await eventually(
        async () => (await request(api.url).get('/metrics')).text,
        (t) => /sav3_media_backup_backlog 0/.test(t),
        10_000,
      );
      const backup = await request(api.url).post('/admin/backups').set(auth).send({ type: 'incr' });
      expect((await waitJob(backup.body.job.id)).status).toBe('succeeded');
      const restoresBefore = new Map<TestWorker, number>();
      for (const w of workers) restoresBefore.set(w, await restores(w));
      const res = await request(api.url).post('/admin/backups/validate').set(auth).send({});
      expect(res.status).toBe(202);
      const again = await request(api.url).post('/admin/backups/validate').set(auth).send({});
      expect(again.status).toBe(409);
      const job = await waitJob(res.body.job.id, 120_000);
      expect({ error: job.error, failed: job.result?.checks?.filter((c: { ok: boolean }) => !c.ok) }).toEqual({ error: null, failed: [] });
      expect(job.status).toBe('succeeded');
      const report = job.result;
      expect(report.status).toBe('passed');
      const names = report.checks.map((c: { name: string }) => c.name);
      expect(names).toEqual([
        'wal_continuity',
        'restore',
        'recovery',
        'newest_commit',
        'amcheck',
        'migrations',
        'tables',
        'media_backup_sample',
      ]);
      const byName = Object.fromEntries(report.checks.map((c: { name: string }) => [c.name, c]));
      expect(byName.tables.data.rows['public.media_objects']).toBe(3);
      expect(byName.media_backup_sample.data.sampled).toBe(3);
      expect(report.timings.restoreMs).toBeGreaterThan(0);
      expect(report.bytes).toBeGreaterThan(1_000_000);
      expect(readdirSync(scratch)).toEqual([]);
      const list = await request(api.url).get('/admin/backups/validations').set(viewer);
      expect(list.status).toBe(200);
      expect(list.body.validations[0]).toMatchObject({ jobId: job.id, status: 'passed' });
      await api.service.backups.inventory.sample();
      expect((await request(api.url).get('/metrics')).text).toMatch(/sav3_backup_validation_last_success_timestamp_seconds [1-9]/);
      const runner = workers.find((w) => w.worker.config.instanceId === job.instanceId)!;
      expect(await restores(runner)).toBe(restoresBefore.get(runner)! + 1);
    }, 180_000);

    it('a point-in-time validation recovers up to the target and no further', async () => {
      const url = cluster.primary.url();
      await sql(url, 'CREATE TABLE IF NOT EXISTS pitr (x int, at timestamptz default now())');
      await sql(url, 'INSERT INTO pitr (x) VALUES (1)');
      await new Promise((r) => setTimeout(r, 300));
      const target = new Date().toISOString();
      await new Promise((r) => setTimeout(r, 300));
      await sql(url, 'INSERT INTO pitr (x) VALUES (2)');
      await sql(url, 'SELECT pg_switch_wal()');
      // A loaded machine can miss the probe's timeout: a read that timed out is just retried.
      await eventually(
        () => api.service.backups.inventory.archiver().catch(() => undefined),
        (a) => a?.rpoExposureSeconds === 0,
        10_000,
      );
      const res = await request(api.url).post('/admin/backups/validate').set(auth).send({ backup: 'latest', targetTime: target });
      expect(res.status).toBe(202);
      const job = await waitJob(res.body.job.id, 120_000);
      expect({ error: job.error, failed: job.result?.checks?.filter((c: { ok: boolean }) => !c.ok) }).toEqual({ error: null, failed: [] });
      const newest = job.result.checks.find((c: { name: string }) => c.name === 'newest_commit');
      expect(Date.parse(newest.data.newestCommit)).toBeLessThanOrEqual(Date.parse(target));
      expect(job.result.target).toEqual({ type: 'time', value: target });
    }, 180_000);

    it('the runbook scripts: backup-database.sh, verify-backups.sh, validate-daily-backups.sh (help, bad options, real runs)', async () => {
      const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
      for (const name of ['backup-database.sh', 'verify-backups.sh', 'validate-daily-backups.sh', 'verify-database-restore.sh']) {
        expect((await runScript(name, ['--help'], env)).code).toBe(0);
        expect((await runScript(name, ['--bogus'], env)).code).toBe(2);
      }
      expect((await runScript('backup-database.sh', ['--type', 'weekly'], env)).code).toBe(2);
      const backup = await runScript('backup-database.sh', ['--type', 'diff'], env);
      expect(backup.code).toBe(0);
      expect(backup.stdout).toContain('"succeeded"');
      const verify = await runScript('verify-backups.sh', [], env);
      expect(verify.code).toBe(0);
      expect(verify.stderr).toMatch(/newest backup \d{8}-\d{6}F_\d{8}-\d{6}D/);
      const validate = await runScript('validate-daily-backups.sh', ['--backup', 'latest'], env);
      expect(validate.code).toBe(0);
      expect(validate.stdout).toContain('"passed"');
      expect((await runScript('validate-daily-backups.sh', ['--backup', '20200101-000000F'], env)).code).toBe(1);
      expect((await runScript('verify-database-restore.sh', [], env)).code).toBe(0);
    }, 120_000);

    it('bad input: unknown label 404, target outside the recoverable range 412 with the range, malformed 400', async () => {
      const unknown = await request(api.url).post('/admin/backups/validate').set(auth).send({ backup: '20200101-000000F' });
      expect(unknown.status).toBe(404);
      const early = await request(api.url).post('/admin/backups/validate').set(auth).send({ targetTime: '2001-01-01T00:00:00Z' });
      expect(early.status).toBe(412);
      expect(early.body.error.usableRange).toEqual({ from: expect.any(String), to: expect.any(String) });
      const late = await request(api.url)
        .post('/admin/backups/validate')
        .set(auth)
        .send({ targetTime: new Date(Date.now() + 3600_000).toISOString() });
      expect(late.status).toBe(412);
      expect(late.body.error.message).toContain('after the newest archived WAL');
      const beforeLabel = await request(api.url)
        .post('/admin/backups/validate')
        .set(auth)
        .send({ backup: firstFull, targetTime: new Date(Date.parse(early.body.error.usableRange.from) - 1000).toISOString() });
      expect(beforeLabel.status).toBe(412);
      for (const body of [{ backup: '../etc' }, { targetTime: 'yesterday' }, { targetTime: '2026-11-26T08:00:00' }, { extra: true }]) {
        expect((await request(api.url).post('/admin/backups/validate').set(auth).send(body)).status).toBe(400);
      }
    });
  });
});

describe('restore points before DR changes', () => {
  let world: ClusterWorld;
  let cluster: PgCluster;
  let api: TestInstance;
  beforeAll(async () => {
    world = await startClusterWorld({ bucket: 'rp-primary' });
    cluster = world.cluster;
    api = await world.start();
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  });

  it('a migration run creates a restore point before the first pending migration, and none when nothing is pending', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-mig-'));
    try {
      for (const name of readdirSync(MIGRATIONS_DIR)) {
        if (!/^\d{14}_/.test(name)) continue;
        mkdirSync(join(dir, name));
        writeFileSync(join(dir, name, 'migration.sql'), readFileSync(join(MIGRATIONS_DIR, name, 'migration.sql')));
      }
      mkdirSync(join(dir, '29990101000000_probe'));
      writeFileSync(join(dir, '29990101000000_probe', 'migration.sql'), 'CREATE TABLE rp_probe (x int);');
      const result = await migrate(cluster.primary.url(), dir);
      expect(result.applied).toEqual(['29990101000000_probe']);
      expect(result.restorePoint).toMatchObject({ name: expect.stringMatching(/^before-migrate-/), lsn: expect.any(String) });
      expect((await migrate(cluster.primary.url(), dir)).restorePoint).toBeUndefined();
      // The run is in the audit log with the restore point's name.
      const audit = await request(api.url).get('/admin/audit?limit=50').set(viewer);
      const event = audit.body.events.find((e: { action: string }) => e.action === 'database.migrate');
      expect(event).toMatchObject({
        actor: 'system:migrate',
        result: 'success',
        detail: { applied: ['29990101000000_probe'], restorePoint: { name: (result.restorePoint as { name: string }).name } },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a switch and a promote each create a named restore point on the primary first, named in the answer and the audit event', async () => {
    expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'restore point test' })).status).toBe(
      200,
    );
    const toReplica = await request(api.url).post('/admin/database/switch').set(auth).send({ to: 'replica' });
    expect(toReplica.status).toBe(200);
    expect(toReplica.body.restorePoint).toMatchObject({
      name: expect.stringMatching(/^before-switch-to-replica-\d{8}T\d{9}Z$/),
      lsn: expect.stringMatching(/\//),
    });
    // Back to the primary: the point is attempted on the standby, which cannot make one; it says so.
    const back = await request(api.url).post('/admin/database/switch').set(auth).send({ to: 'primary' });
    expect(back.body.restorePoint).toEqual({ error: expect.stringContaining('recovery') });
    const audited = async (match: (e: { action: string; result: string; detail: { restorePoint?: { name?: string } } }) => boolean) =>
      (
        await eventually(
          () => request(api.url).get('/admin/audit?limit=30').set(viewer),
          (r) => r.body.pending === 0 && r.body.events?.some(match),
          8000,
        )
      ).body.events.find(match);
    const switchEvent = await audited(
      (e) => e.action === 'database.switch' && e.detail?.restorePoint?.name === toReplica.body.restorePoint.name,
    );
    expect(switchEvent).toBeDefined();

    const promote = await request(api.url)
      .post('/admin/database/promote')
      .set(auth)
      .send({ confirm: 'promote-replica', maxLagSeconds: 3600 });
    expect(promote.status).toBe(200);
    expect(promote.body.restorePoint).toMatchObject({ name: expect.stringMatching(/^before-promote-/), lsn: expect.any(String) });
    // The old primary is fenced now; the audit log lands on the promoted one after the switch.
    expect((await request(api.url).post('/admin/database/switch').set(auth).send({ to: 'replica' })).status).toBe(200);
    const promoteEvent = await audited((e) => e.action === 'database.promote' && e.result === 'success');
    expect(promoteEvent.detail.restorePoint.name).toBe(promote.body.restorePoint.name);
  }, 60_000);
});

describe('when pgBackRest cannot answer', () => {
  const instances: TestInstance[] = [];
  let s3: S3ServerHandle;
  let dir: string;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'bk-missing' });
    dir = mkdtempSync(join(tmpdir(), 'sav3-pgbr-bad-'));
  });
  afterAll(async () => {
    for (const i of instances) await i.stop();
    await s3.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  const start = async (env: Record<string, string>) => {
    const i = await startInstance({ ...mediaEnv('PRIMARY', s3), ...env });
    instances.push(i);
    return i;
  };

  it('not configured, and no worker published an inventory: 503 with a code', async () => {
    const api = await start({});
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('pgbackrest_missing');
    expect((await request(api.url).post('/admin/backups').set(auth).send({ type: 'full' })).status).toBe(503);
  });

  it('the binary missing: 503 pgbackrest_missing; the process keeps serving', async () => {
    const api = await start({ PGBACKREST_STANZA: 'main', PGBACKREST_BIN: '/nonexistent/pgbackrest' });
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('pgbackrest_missing');
    expect((await request(api.url).get('/health/live')).status).toBe(200);
  });

  it('a repository that is not there: 503 repository_unreachable', async () => {
    const config = join(dir, 'pgbackrest.conf');
    writeFileSync(config, `[global]\nrepo1-path=${join(dir, 'no-such-repo')}\nlog-level-file=off\n[main]\npg1-path=${join(dir, 'pg')}\n`);
    const api = await start({ PGBACKREST_STANZA: 'main', PGBACKREST_CONFIG: config });
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('repository_unreachable');
  });

  it('a hung pgBackRest: 503 pgbackrest_timeout within the bound', async () => {
    const hung = join(dir, 'hung-pgbackrest');
    writeFileSync(hung, '#!/bin/sh\nsleep 30\n', { mode: 0o755 });
    const api = await start({ PGBACKREST_STANZA: 'main', PGBACKREST_BIN: hung, PGBACKREST_TIMEOUT_MS: '500', PGBACKREST_OS_USER: 'root' });
    const started = Date.now();
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('pgbackrest_timeout');
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
