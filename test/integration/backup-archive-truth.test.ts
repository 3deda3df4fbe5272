import request from 'supertest';
import { eventually } from '../../support/common.ts';
import { sql } from '../support/dr-scripts.ts';
import { script as runScript } from '../support/run-script.ts';
import { OPERATOR_TOKEN, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { startBackupWorld, type BackupWorld } from '../support/world.ts';

const viewer = { Authorization: `Bearer ${VIEWER_TOKEN}` };

/**
 * pg_stat_archiver is not the truth about archiving: an archive_command that succeeds without
 * storing, or none at all, must show as failing, counted, with the RPO exposure growing.
 */
describe('archiving status checked against the pgBackRest repository and the waiting segments', () => {
  let world: BackupWorld;
  let api: TestInstance;
  let primary: string;
  let realCommand: string;

  beforeAll(async () => {
    world = await startBackupWorld({
      bucket: 'archive-truth-media',
      env: { BACKUP_STATUS_INTERVAL_MS: '60000', PGBACKREST_INFO_CACHE_MS: '0', WAL_ARCHIVE_STALL_MS: '1000' },
    });
    api = await world.start(world.repo.env);
    primary = world.cluster.primary.url();
    realCommand = (await sql<{ archive_command: string }>(primary, 'SHOW archive_command'))[0]!.archive_command;
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
  });

  const setCommand = async (command: string) => {
    await sql(primary, `ALTER SYSTEM SET archive_command = '${command.replace(/'/g, "''")}'`);
    await sql(primary, 'SELECT pg_reload_conf()');
    await new Promise((r) => setTimeout(r, 300));
  };
  const writeAndSwitch = async (n: number) => {
    for (let i = 0; i < n; i += 1)
      await sql(primary, 'CREATE TABLE IF NOT EXISTS archive_truth (x int); INSERT INTO archive_truth VALUES (1); SELECT pg_switch_wal()');
  };
  const archiving = async () => {
    const res = await request(api.url).get('/admin/backups').set(viewer);
    expect(res.status).toBe(200);
    return res.body.archiving;
  };
  const metric = async (name: string, reason: string) =>
    Number(new RegExp(`${name}\\{reason="${reason}"\\} (\\d+)`).exec((await request(api.url).get('/metrics')).text)?.[1] ?? NaN);

  it('archive_command empty (archive_mode on): segments wait, archiving is failing archive_not_progressing until it archives again', async () => {
    await eventually(archiving, (a) => a.failing === false, 15_000);
    await setCommand('');
    await writeAndSwitch(2);
    const failing = await eventually(archiving, (a) => a.failing === true, 15_000);
    expect(failing.failure.code).toBe('archive_not_progressing');
    expect(failing.ready.count).toBeGreaterThanOrEqual(2);
    expect(failing.rpoExposureSeconds).toBeGreaterThanOrEqual(1);
    expect(failing.failedCount).toBe(0); // PostgreSQL itself counts nothing
    expect(await metric('sav3_wal_archive_failures_total', 'archive_not_progressing')).toBeGreaterThanOrEqual(2);
    expect(await metric('sav3_wal_archiving_failing', 'archive_not_progressing')).toBe(1);
    await setCommand(realCommand);
    const healed = await eventually(archiving, (a) => a.failing === false, 30_000);
    expect(healed.ready.count).toBe(0);
    expect(await metric('sav3_wal_archiving_failing', 'archive_not_progressing')).toBe(0);
  }, 60_000);

  it('archive_command /bin/true: PostgreSQL says archived, the repository lacks it: failing archive_missing_in_repository', async () => {
    await setCommand('/bin/true');
    await writeAndSwitch(3);
    await api.service.backups.inventory.archiver();
    // PostgreSQL reported those segments before a later repository listing (beyond its grace).
    await new Promise((r) => setTimeout(r, 11_000));
    const a = await archiving();
    expect(a.failing).toBe(true);
    expect(a.failure.code).toBe('archive_missing_in_repository');
    expect(a.lastArchivedWal > a.repositoryArchivedWal).toBe(true);
    expect(a.rpoExposureSeconds).toBeGreaterThanOrEqual(10);
    expect(await metric('sav3_wal_archive_failures_total', 'archive_missing_in_repository')).toBeGreaterThanOrEqual(3);
    expect(await metric('sav3_wal_archiving_failing', 'archive_missing_in_repository')).toBe(1);
    // Archiving to the repository again: once it holds newer segments, no longer failing.
    await setCommand(realCommand);
    await writeAndSwitch(1);
    await eventually(archiving, (x) => x.failing === false, 20_000);
  }, 60_000);

  // Outside attack on #13, finding 4: once archive_command works again PostgreSQL reports all well,
  // yet the segments it dropped hold acknowledged rows that no restore from the backup reaches.
  it('a hole left by /bin/true after the newest backup is failing archive_hole (gauge, counter, RPO exposure, verify-backups.sh) until a new backup', async () => {
    await world.repo.exec(['backup', '--type=full']);
    await setCommand('/bin/true');
    await writeAndSwitch(2); // acknowledged rows in segments the repository never gets
    await setCommand(realCommand);
    await writeAndSwitch(2);
    const holed = await eventually(archiving, (a) => a.failure?.code === 'archive_hole', 30_000);
    expect(holed.failing).toBe(true);
    expect(holed.failure.message).toContain('stops before');
    expect(await metric('sav3_wal_archiving_failing', 'archive_hole')).toBe(1);
    expect(await metric('sav3_wal_archive_failures_total', 'archive_hole')).toBeGreaterThanOrEqual(2);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await archiving()).rpoExposureSeconds).toBeGreaterThanOrEqual(1);
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    const verify = await runScript('verify-backups.sh', [], env);
    expect(verify.code).toBe(1);
    expect(verify.stderr).toContain('(archive_hole)');
    expect(verify.stderr).toContain('cannot be recovered to the end of the archive');

    // A backup after the hole: a restore reaches the end of the archive again.
    await world.repo.exec(['backup', '--type=full']);
    const healed = await eventually(archiving, (a) => a.failing === false, 30_000);
    expect(healed.rpoExposureSeconds).toBe(0);
    expect(await metric('sav3_wal_archiving_failing', 'archive_hole')).toBe(0);
  }, 120_000);
});
