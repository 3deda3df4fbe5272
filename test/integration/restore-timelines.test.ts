// Recovery follows the archive's newest timeline (PostgreSQL's recovery_target_timeline 'latest'),
// so the restore script reads the archive as recovery will: on that timeline's history. Found by an
// outside attack on the backups: after a point-in-time restore (timeline 2), a hole on timeline 2
// was hidden by timeline 1's abandoned segments at the same positions, `--from-backup latest` picked
// a backup on the abandoned branch (the dry run passed, the real restore stopped PostgreSQL and then
// failed with "requested timeline 2 is not a child of this server's history"), and a backup whose
// own first segment was not archived passed the dry run.
import { readdirSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { sql } from '../support/dr-scripts.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { archiveAll, restoreScript, restoreScriptEnv } from '../support/restore-script.ts';
import { startBackupWorld, type BackupWorld } from '../support/world.ts';
import { startWorker } from '../support/worker.ts';
import { eventually } from '../../support/common.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/** Until `check` holds (the inventory is cached for BACKUP_INFO_CACHE_MS). */
async function eventuallyFresh(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('the inventory never showed it');
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * A backup world with one API instance for the describe block that calls it (started before its
 * tests, destroyed after): `ready` gets the world, the instance and the restore script's
 * environment; returns the directory of the script's report journals.
 */
function restoreWorld(
  bucket: string,
  worldEnv: Record<string, string>,
  ready: (world: BackupWorld, api: TestInstance, env: Record<string, string>) => void,
): string {
  const journalRoot = mkdtempSync(join(tmpdir(), `sav3-${bucket}-`));
  let world: BackupWorld | undefined;
  beforeAll(async () => {
    world = await startBackupWorld({ bucket, env: { HEALTH_TIMEOUT_MS: '500', ...worldEnv } });
    const api = await world.start();
    ready(world, api, restoreScriptEnv(world, api, journalRoot));
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
    rmSync(journalRoot, { recursive: true, force: true });
  });
  return journalRoot;
}

describe('restore-database.sh reads the archive on the timeline recovery follows (real pgBackRest)', () => {
  let world: BackupWorld;
  let api: TestInstance;
  let env: Record<string, string>;
  restoreWorld('restore-timelines', { PGBACKREST_INFO_CACHE_MS: '500' }, (w, i, e) => {
    [world, api, env] = [w, i, e];
  });
  const labels = async () =>
    (JSON.parse(await world.repo.exec(['info', '--output=json'])) as { backup: { label: string }[] }[])[0]!.backup.map((b) => b.label);
  const archivedFiles = () =>
    readdirSync(join(world.repo.dir, 'repo'), { recursive: true })
      .map(String)
      .filter((f) => /(^|\/)[0-9A-F]{24}-[0-9a-f]{40}/.test(f));
  const put = async (key: string) => expect((await request(api.url).put(`/media/${key}`).send(key)).status).toBe(201);
  const rows = async () => (await sql<{ n: number }>(world.cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects'))[0]!.n;

  it('a backup on an abandoned branch is skipped by latest and refused by label; a hole on the new timeline is found under the old one', async () => {
    // Timeline 1: backup A, a restore point, then more WAL and backup B (after the fork to come).
    await world.repo.exec(['backup', '--type=full']);
    const [a] = await labels();
    await put('tl/one');
    expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'fork-here' })).status).toBe(201);
    for (const key of ['tl/two', 'tl/three', 'tl/four']) {
      await put(key);
      await archiveAll(world);
    }
    await world.repo.exec(['backup', '--type=full']);
    const b = (await labels()).at(-1)!;
    await put('tl/five');
    await archiveAll(world);

    // A point-in-time restore to the restore point: timeline 2 forks off timeline 1 there.
    const restored = await restoreScript(['--from-backup', a!, '--target-name', 'fork-here', '--confirm'], env, 150_000);
    expect({ code: restored.code, stderr: restored.stderr }).toEqual({ code: 0, stderr: '' });
    expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'restored' })).status).toBe(200);
    expect(await rows()).toBe(1);

    // B lies on timeline 1 after the fork: by label it is refused before anything is touched,
    // and latest skips it for A (the dry run names why).
    const byLabel = await restoreScript(['--from-backup', b, '--confirm'], env, 120_000);
    expect(byLabel.code).toBe(1);
    expect(byLabel.stderr).toContain(`backup ${b} cannot be restored`);
    expect(byLabel.stderr).toContain('is not a child of this server');
    expect(byLabel.stdout).not.toContain('step: ');
    const latest = await restoreScript(['--from-backup', 'latest', '--dry-run'], env, 120_000);
    expect({ code: latest.code, stderr: latest.stderr }).toEqual({ code: 0, stderr: '' });
    expect(latest.stdout).toContain(`backup ${b} skipped`);
    expect(latest.stdout).toContain(`"label":"${a}"`);
    expect(latest.stdout).toContain('recovery follows timeline 2');

    // The inventory and the validation skip B too (outside attack on #13, finding 5): backupAge and
    // the last-success gauge go by A, and a validation of latest restores A (real pgBackRest, in a
    // worker); B by label fails with the reason, restoring nothing.
    const worker = await startWorker({ ...world.env, ...world.repo.env, INSTANCE_ID: 'tl-worker' }, world.prefix);
    try {
      const here = await world.start({ ...world.repo.env, PGBACKREST_INFO_CACHE_MS: '0' });
      const inv = await eventually(
        async () => (await request(here.url).get('/admin/backups').set(auth)).body,
        (x) => x.backupAge?.newestFullOrDiff?.label === a,
        30_000,
      );
      expect(inv.backupAge.unrecoverable).toEqual([{ label: b, problem: expect.stringContaining('is not a child') }]);
      const stopA = Date.parse(inv.backups.find((x: { label: string }) => x.label === a).stoppedAt) / 1000;
      expect((await request(here.url).get('/metrics')).text).toContain(`sav3_backup_last_success_timestamp_seconds{type="full"} ${stopA}`);
      const validate = async (body: object) => {
        const res = await request(here.url).post('/admin/backups/validate').set(auth).send(body);
        expect(res.status).toBe(202);
        return eventually(
          async () => (await request(here.url).get(`/admin/jobs/${res.body.job.id}`).set(auth)).body,
          (j) => j.status === 'succeeded' || j.status === 'failed',
          120_000,
        );
      };
      const latestJob = await validate({});
      expect({ status: latestJob.status, error: latestJob.error, label: latestJob.result?.backup?.label }).toEqual({
        status: 'succeeded',
        error: null,
        label: a,
      });
      const bJob = await validate({ backup: b });
      expect(bJob.status).toBe('failed');
      expect(bJob.result.checks).toEqual([
        expect.objectContaining({ name: 'wal_continuity', ok: false, detail: expect.stringContaining('is not a child of this server') }),
      ]);
    } finally {
      await worker.stop();
    }

    // Timeline 2 goes on over positions timeline 1 also archived (its abandoned branch).
    for (const key of ['tl/six', 'tl/seven', 'tl/eight']) {
      await put(key);
      await archiveAll(world);
    }
    const tl2 = archivedFiles()
      .filter((f) => f.split('/').at(-1)!.startsWith('00000002'))
      .sort((x, y) => x.split('/').at(-1)!.localeCompare(y.split('/').at(-1)!));
    const lost = tl2[1]!;
    const lostSegment = lost.split('/').at(-1)!.slice(0, 24);
    // Timeline 1 holds the same position: read by position alone, the archive looked whole.
    expect(
      archivedFiles().some((f) =>
        f
          .split('/')
          .at(-1)!
          .startsWith(`00000001${lostSegment.slice(8)}`),
      ),
    ).toBe(true);
    rmSync(join(world.repo.dir, 'repo', lost));
    const holed = await restoreScript(['--from-backup', 'latest', '--dry-run'], env, 120_000);
    expect(holed.code).toBe(1);
    expect(holed.stderr).toContain(`missing: ${lostSegment}`);
    expect(holed.stderr).toContain('recovery stops there');

    // The inventory says the same of every backup: A stops at the hole, B is on the abandoned branch.
    // An instance on the repository's host (it runs pgBackRest itself; without a stanza it reads a worker's publication).
    const local = await world.start({ ...world.repo.env, PGBACKREST_INFO_CACHE_MS: '500' });
    const listed = await request(local.url).get('/admin/backups').set(auth);
    expect({ status: listed.status, body: listed.status === 200 ? null : listed.body }).toEqual({ status: 200, body: null });
    type Listed = { label: string; recovery: { timeline: number; toEndOfArchive: boolean; problem: string | null } | null };
    const byLabel2 = new Map((listed.body.backups as Listed[]).map((x) => [x.label, x.recovery]));
    await eventuallyFresh(async () => {
      const body = (await request(local.url).get('/admin/backups').set(auth)).body as { backups: Listed[] };
      for (const x of body.backups) byLabel2.set(x.label, x.recovery);
      return byLabel2.get(a!)?.problem?.includes(`missing: ${lostSegment}`) === true;
    });
    expect(byLabel2.get(a!)).toMatchObject({ timeline: 2, toEndOfArchive: false });
    expect(byLabel2.get(b)).toMatchObject({ toEndOfArchive: false, problem: expect.stringContaining('is not a child of this server') });
    // The hole after A (the newest backup recovery can start from) is archiving failing (finding 4).
    const failing = await eventually(
      async () => (await request(local.url).get('/admin/backups').set(auth)).body,
      (x) => x.archiving?.failure?.code === 'archive_hole',
      30_000,
    );
    expect(failing.archiving.failure.message).toContain(`stops before ${lostSegment}`);
  }, 400_000);

  it('a backup whose own WAL is not all archived cannot be recovered: refused by the dry run', async () => {
    await world.repo.exec(['backup', '--type=full']);
    const c = (await labels()).at(-1)!;
    const info = JSON.parse(await world.repo.exec(['info', '--output=json', `--set=${c}`])) as {
      backup: { label: string; archive: { start: string } }[];
    }[];
    const start = info[0]!.backup.find((x) => x.label === c)!.archive.start;
    rmSync(
      join(
        world.repo.dir,
        'repo',
        archivedFiles().find((f) => f.split('/').at(-1)!.startsWith(start))!,
      ),
    );
    const run = await restoreScript(['--from-backup', c, '--dry-run'], env, 120_000);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`the archive lacks ${start}, part of the backup's own WAL`);
    expect(run.stdout).not.toContain('dry run: nothing was changed');
  }, 120_000);
});

describe("restore-database.sh follows this server's timeline and never throws away WAL it did not archive (real pgBackRest)", () => {
  let world: BackupWorld;
  let api: TestInstance;
  let env: Record<string, string>;
  const journalRoot = restoreWorld('restore-live', {}, (w, i, e) => {
    [world, api, env] = [w, i, e];
  });
  const put = async (key: string) => expect((await request(api.url).put(`/media/${key}`).send(key)).status).toBe(201);
  const keys = async () =>
    (await sql<{ key: string }>(world.cluster.primary.url(), 'SELECT key FROM media_objects ORDER BY key')).map((r) => r.key);
  const restore = async (args: string[], extra: Record<string, string> = {}) => {
    const run = await restoreScript(args, { ...env, ...extra }, 150_000);
    return run;
  };
  const writesBack = async () =>
    expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'restored' })).status).toBe(200);

  it("a history file missing from the repository does not make recovery follow an older timeline: it follows this server's", async () => {
    await world.repo.exec(['backup', '--type=full']);
    await put('live/1');
    expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'p1' })).status).toBe(201);
    await put('live/2');
    await archiveAll(world);
    expect((await restore(['--from-backup', 'latest', '--target-name', 'p1', '--confirm'])).code).toBe(0);
    await writesBack();
    await put('live/3');
    expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'p2' })).status).toBe(201);
    await put('live/4');
    await archiveAll(world);
    expect((await restore(['--from-backup', 'latest', '--target-name', 'p2', '--confirm'])).code).toBe(0);
    await writesBack();
    await put('live/5');
    await archiveAll(world);
    expect(await keys()).toEqual(['live/1', 'live/3', 'live/5']);
    // Timeline 2's history goes missing: PostgreSQL's 'latest' would stop probing at 2 and follow timeline 1.
    const history = readdirSync(join(world.repo.dir, 'repo'), { recursive: true })
      .map(String)
      .find((f) => f.split('/').at(-1)!.startsWith('00000002.history'))!;
    rmSync(join(world.repo.dir, 'repo', history));
    // A validation in a worker follows the active primary's timeline too (pgBackRest --target-timeline):
    // it recovers everything timeline 3 holds.
    const worker = await startWorker({ ...world.env, ...world.repo.env, INSTANCE_ID: 'live-worker' }, world.prefix);
    try {
      // Until the worker announced itself (503 no_worker before).
      const res = await eventually(
        () => request(api.url).post('/admin/backups/validate').set(auth).send({}),
        (r) => r.status !== 503,
        30_000,
        300,
      );
      expect({ status: res.status, body: res.status === 202 ? null : res.body }).toEqual({ status: 202, body: null });
      const job = await eventually(
        async () => (await request(api.url).get(`/admin/jobs/${res.body.job.id}`).set(auth)).body,
        (j) => j.status === 'succeeded' || j.status === 'failed',
        120_000,
      );
      expect({ status: job.status, error: job.error }).toEqual({ status: 'succeeded', error: null });
      expect(job.result.checks).toContainEqual(
        expect.objectContaining({ name: 'wal_continuity', ok: true, detail: expect.stringContaining("timeline 3's history") }),
      );
    } finally {
      await worker.stop();
    }
    const dry = await restore(['--from-backup', 'latest', '--dry-run']);
    expect({ code: dry.code, stderr: dry.stderr }).toEqual({ code: 0, stderr: '' });
    expect(dry.stdout).toContain("timeline: 3 (this server's)");
    expect(dry.stdout).toContain('recovery follows timeline 3');
    // This server's timeline unknown (not answering, no control file: e.g. after a restore
    // interrupted before) while the archive holds branches the point-in-time restores left: refused
    // until the operator names the timeline (an outside attack had a rerun follow an abandoned one).
    const blind = { DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/none', PGDATA: join(journalRoot, 'no-such-dir') };
    const unknown = await restore(['--from-backup', 'latest', '--dry-run'], blind);
    expect(unknown.code).toBe(1);
    // (here 'latest' stops at timeline 1 for the missing history file: the archive's newer timelines say it)
    expect(unknown.stderr).toMatch(
      /this server's timeline is unknown and the archive holds more than one branch|the archive holds timeline\(s\) 2, 3 too/,
    );
    const named = await restore(['--from-backup', 'latest', '--timeline', '3', '--dry-run'], blind);
    expect(named.stdout).toContain('timeline: 3 (--timeline)');
    expect(named.stdout).toContain('recovery follows timeline 3');
    const real = await restore(['--from-backup', 'latest', '--confirm']);
    expect({ code: real.code, stderr: real.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await keys()).toEqual(['live/1', 'live/3', 'live/5']);
    await writesBack();
  }, 300_000);

  it('WAL this server never archived: the dry run and the real run refuse (nothing touched); once archived, the restore loses nothing', async () => {
    const primary = world.cluster.primary.url();
    await sql(primary, "ALTER SYSTEM SET archive_command = 'false'");
    await sql(primary, 'SELECT pg_reload_conf()');
    try {
      await put('live/6');
      await sql(primary, 'SELECT pg_switch_wal()');
      const dry = await restore(['--from-backup', 'latest', '--dry-run'], { SAV3_UNARCHIVED_GRACE_SECONDS: '0' });
      expect(dry.code).toBe(1);
      expect(dry.stderr).toMatch(/this server holds \d+ WAL segment\(s\) not yet in the archive/);
      // Under the grace the dry run lets it pass; the real run's clean stop still finds it unarchived.
      const real = await restore(['--from-backup', 'latest', '--confirm'], { SAV3_UNARCHIVED_GRACE_SECONDS: '3600' });
      expect(real.code).toBe(1);
      expect(real.stderr).toContain('never archived');
      expect(real.stdout).not.toContain('step: pgbackrest restore');
      await world.cluster.primary.start();
    } finally {
      await sql(primary, 'ALTER SYSTEM RESET archive_command');
      await sql(primary, 'SELECT pg_reload_conf()');
    }
    await archiveAll(world);
    const back = await restore(['--from-backup', 'latest', '--confirm'], { SAV3_UNARCHIVED_GRACE_SECONDS: '0' });
    expect({ code: back.code, stderr: back.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await keys()).toEqual(['live/1', 'live/3', 'live/5', 'live/6']);
  }, 300_000);
});
