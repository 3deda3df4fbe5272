// The restore script refuses a target recovery cannot reach (before touching anything), and when
// PostgreSQL still ends during recovery it says so at once, with the state and what to do.
import { sql } from '../support/dr-scripts.ts';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { restoreServer } from '../../src/restore-database.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { archiveAll, restoreScript, restoreScriptEnv } from '../support/restore-script.ts';
import { startBackupWorld, type BackupWorld } from '../support/world.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
/** The script's result and how long it ran (`ms`). */
async function script(args: string[], env: Record<string, string>) {
  const started = Date.now();
  return { ...(await restoreScript(args, env, 150_000)), ms: Date.now() - started };
}

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

describe('waiting for promotion watches the postmaster', () => {
  it("a postmaster that is gone fails the wait at once with the log's FATAL lines (not after the hour bound)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-restore-wait-'));
    try {
      const pgData = join(dir, 'data');
      mkdirSync(pgData);
      const log = join(dir, 'restore.log');
      writeFileSync(
        log,
        'LOG:  redo done at 0/5000100\nFATAL:  recovery ended before configured recovery target was reached\nLOG:  startup process (PID 12) exited with exit code 1\n',
      );
      // A stale postmaster.pid naming a process that is gone counts as gone too.
      writeFileSync(join(pgData, 'postmaster.pid'), `${await deadPid()}\n${pgData}\n`);
      const server = restoreServer(pgData, '/usr/lib/postgresql/15/bin', 'postgres', 'postgresql://postgres@127.0.0.1:1/x', log);
      const started = Date.now();
      await expect(server.waitPromoted(3600_000)).rejects.toThrow(
        /PostgreSQL exited during recovery: FATAL: {2}recovery ended before configured recovery target was reached/,
      );
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('restore-database.sh: unreachable targets (real pgBackRest)', () => {
  let world: BackupWorld;
  let api: TestInstance;
  let env: Record<string, string>;
  const journalRoot = mkdtempSync(join(tmpdir(), 'sav3-restore-journals-'));

  const unchanged = async (rows: number) => {
    expect(await sql(world.cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects')).toEqual([{ n: rows }]);
    expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(false);
  };

  beforeAll(async () => {
    world = await startBackupWorld({ bucket: 'restore-target', env: { HEALTH_TIMEOUT_MS: '500' } });
    api = await world.start();
    await world.repo.exec(['backup', '--type=full']);
    expect((await request(api.url).put('/media/t/one').send('one')).status).toBe(201);
    expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'known-point' })).status).toBe(201);
    await archiveAll(world);
    env = restoreScriptEnv(world, api, journalRoot);
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
    rmSync(journalRoot, { recursive: true, force: true });
  });

  it("a data directory that is not DATABASE_URL's server's (the replica's) is refused, dry run too, and nothing is touched; a symlink to the right one passes", async () => {
    const replicaData = world.cluster.replica.dataDir;
    const inRecovery = async () => sql(world.cluster.replica.url(), 'SELECT pg_is_in_recovery() AS r');
    for (const mode of ['--dry-run', '--confirm']) {
      const run = await script(['--from-backup', 'latest', '--pg-data', replicaData, mode], env);
      expect({ mode, code: run.code }).toEqual({ mode, code: 1 });
      expect(run.stderr).toMatch(/refusing: the server of DATABASE_URL runs on .*, not on .*replica/);
      expect(run.stdout).not.toContain('step: ');
    }
    expect(await inRecovery()).toEqual([{ r: true }]);
    await unchanged(1);
    // DATABASE_URL does not answer and a server runs on the directory: it is another server.
    const deadUrl = 'postgresql://postgres@127.0.0.1:1/postgres';
    const other = await script(['--from-backup', 'latest', '--pg-data', replicaData, '--dry-run'], { ...env, DATABASE_URL: deadUrl });
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('a PostgreSQL server runs on');
    // The same stopped standby: refused unless --allow-standby says the primary is known to be gone.
    await world.cluster.replica.stop('fast');
    try {
      const standby = await script(['--from-backup', 'latest', '--pg-data', replicaData, '--confirm'], { ...env, DATABASE_URL: deadUrl });
      expect(standby.code).toBe(1);
      expect(standby.stderr).toContain('is a standby (standby.signal)');
      expect(standby.stdout).not.toContain('step: ');
      const allowed = await script(['--from-backup', 'latest', '--pg-data', replicaData, '--allow-standby', '--dry-run'], {
        ...env,
        DATABASE_URL: deadUrl,
      });
      expect({ code: allowed.code, stderr: allowed.stderr }).toEqual({ code: 0, stderr: '' });
      expect(allowed.stdout).toContain('belongs to the backup');
    } finally {
      await world.cluster.replica.start();
    }
    const link = join(journalRoot, 'primary-data-link');
    symlinkSync(world.cluster.primary.dataDir, link);
    const viaLink = await script(['--from-backup', 'latest', '--pg-data', link, '--dry-run'], env);
    expect({ code: viaLink.code, stderr: viaLink.stderr }).toEqual({ code: 0, stderr: '' });
    expect(viaLink.stdout).toContain('is the data directory of the server of DATABASE_URL');
  }, 90_000);

  it('an unknown restore point: the dry run exits 1 and a real run exits 1 without touching anything; a known one passes the check', async () => {
    const dry = await script(['--from-backup', 'latest', '--target-name', 'does-not-exist', '--dry-run'], env);
    expect(dry.code).toBe(1);
    expect(dry.stderr).toContain('restore point does-not-exist is not in the archived WAL');
    expect(dry.stderr).toContain('known-point');
    const real = await script(['--from-backup', 'latest', '--target-name', 'does-not-exist', '--confirm'], env);
    expect(real.code).toBe(1);
    expect(real.stdout).not.toContain('step: ');
    await unchanged(1);
    const known = await script(['--from-backup', 'latest', '--target-name', 'known-point', '--dry-run'], env);
    expect({ code: known.code, stderr: known.stderr }).toEqual({ code: 0, stderr: '' });
    expect(known.stdout).toMatch(/target: restore point known-point at [0-9A-F]+\/[0-9A-F]+ is in the archived WAL/);
  }, 60_000);

  it('a target time after the newest archived commit (or in the future) is refused before anything is done', async () => {
    await new Promise((r) => setTimeout(r, 1500));
    const late = new Date().toISOString();
    const dry = await script(['--from-backup', 'latest', '--target-time', late, '--dry-run'], env);
    expect(dry.code).toBe(1);
    expect(dry.stderr).toContain('is after the newest commit in the archived WAL');
    const future = new Date(Date.now() + 3600_000).toISOString();
    const real = await script(['--from-backup', 'latest', '--target-time', future, '--confirm'], env);
    expect(real.code).toBe(1);
    expect(real.stderr).toContain('is in the future');
    await unchanged(1);
  }, 60_000);

  it('PostgreSQL ending during recovery (target unreachable, check skipped): the script fails at once, says the state and the way back, which works', async () => {
    const run = await script(['--from-backup', 'latest', '--target-name', 'does-not-exist', '--skip-target-check', '--confirm'], env);
    expect(run.code).toBe(1);
    expect(run.ms).toBeLessThan(60_000);
    // Recovery ends before or after pg_ctl saw the server ready: the start or the wait fails, at once,
    // with the server's own words.
    expect(run.stderr).toMatch(/PostgreSQL (did not start|exited during recovery)/);
    expect(run.stderr).toContain('recovery ended before configured recovery target was reached');
    expect(run.stdout).toMatch(/step: (start PostgreSQL|wait for promotion) failed/);
    expect(run.stdout).toContain('outcome: FAILED. PostgreSQL on this host is DOWN and read-only mode is still ON');
    const next = run.stdout.split('\n').find((l) => l.includes('restore to the end of the archive'))!;
    expect(next).toMatch(/--from-backup \d{8}-\d{6}F --timeline \d+ --confirm$/);
    // Following the printed way back brings the primary back with everything archived.
    const back = await script(
      next.slice(next.indexOf('scripts/dr/restore-database.sh') + 'scripts/dr/restore-database.sh '.length).split(' '),
      env,
    );
    expect({ code: back.code, stderr: back.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await sql(world.cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects')).toEqual([{ n: 1 }]);
    await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'test done' });
  }, 150_000);
  // Last: it breaks the archive. Found by an outside attack: an archive_command that reported
  // success without storing (or archive_mode off for a while) leaves a hole; recovery stops there
  // without an error, and a restore "to the end of the archive" lost every row archived after it.
  it('a hole in the archived WAL: a restore to the end of the archive and a target after the hole are refused, naming the hole', async () => {
    const rows = (await sql<{ n: number }>(world.cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects'))[0]!.n;
    for (const key of ['hole/a', 'hole/b', 'hole/c']) {
      expect((await request(api.url).put(`/media/${key}`).send(key)).status).toBe(201);
      await archiveAll(world);
    }
    const afterHole = new Date().toISOString();
    // The segment holding hole/b goes missing from the repository.
    const archived = readdirSync(join(world.repo.dir, 'repo'), { recursive: true })
      .map(String)
      .filter((f) => /(^|\/)[0-9A-F]{24}-[0-9a-f]{40}/.test(f))
      .sort((x, y) => x.split('/').at(-1)!.localeCompare(y.split('/').at(-1)!));
    const lost = archived.at(-2)!;
    rmSync(join(world.repo.dir, 'repo', lost));
    const segment = lost.split('/').at(-1)!.slice(0, 24);

    const whole = await script(['--from-backup', 'latest', '--dry-run'], env);
    expect(whole.code).toBe(1);
    expect(whole.stderr).toMatch(/the archived WAL has a hole after [0-9A-F]{24} \(missing: [0-9A-F]{24}; next archived: [0-9A-F]{24}\)/);
    expect(whole.stderr).toContain('recovery stops there');
    expect(whole.stderr).not.toContain(`after ${segment}`);
    const real = await script(['--from-backup', 'latest', '--confirm'], env);
    expect(real.code).toBe(1);
    expect(real.stdout).not.toContain('step: ');
    const late = await script(['--from-backup', 'latest', '--target-time', afterHole, '--dry-run'], env);
    expect(late.code).toBe(1);
    expect(late.stderr).toContain('has a hole after');
    await unchanged(rows + 3);
  }, 120_000);
});
