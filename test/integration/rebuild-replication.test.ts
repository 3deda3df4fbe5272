import { mkdtempSync, chmodSync, chownSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPgCluster, type PgCluster, type PgNode } from '../../support/pg-cluster.ts';
import { createPgBackRestRepo, type PgBackRestRepo } from '../../support/pgbackrest.ts';
import { caughtUp, drScript, query } from '../support/dr-scripts.ts';

const script = drScript;

const ids = async (node: PgNode) => (await query<{ id: number }>(node, 'SELECT id FROM rows ORDER BY id')).map((r) => r.id);
const inRecovery = async (node: PgNode) => (await query<{ r: boolean }>(node, 'SELECT pg_is_in_recovery() AS r'))[0]!.r;

async function streamingFrom(primary: PgNode): Promise<string[]> {
  return (await query<{ state: string }>(primary, 'SELECT state FROM pg_stat_replication')).map((r) => r.state);
}

describe('rebuild-primary.sh and setup-replication.sh against real clusters', () => {
  let cluster: PgCluster;
  let repo: PgBackRestRepo;
  let oldPrimary: PgNode;
  let newPrimary: PgNode;
  let backupLabel: string;
  const common = () => ['--stanza', repo.stanza, '--pgbackrest-config', repo.config, '--timeout', '60'];

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-rebuild-'));
    chmodSync(dir, 0o700);
    if (process.getuid?.() === 0) chownSync(dir, 101, 104);
    repo = createPgBackRestRepo(dir);
    cluster = await startPgCluster({ dir, settings: (dataDir) => repo.archiveSettings(dataDir) });
    [oldPrimary, newPrimary] = [cluster.primary, cluster.replica];
    await repo.stanzaCreate(cluster.primary, dir);
    await query(cluster.primary, 'CREATE TABLE rows (id int PRIMARY KEY)');
    await query(cluster.primary, 'INSERT INTO rows SELECT generate_series(1, 10)');
    backupLabel = await repo.backup(cluster.primary, dir);
  }, 120_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  it('--help prints usage and acts on nothing; unknown options and a missing --confirm exit 2', async () => {
    const help = await script('rebuild-primary.sh', ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('pg_rewind');
    expect((await script('setup-replication.sh', ['--help'])).code).toBe(0);
    expect((await script('rebuild-primary.sh', ['--frobnicate'])).code).toBe(2);
    expect((await script('setup-replication.sh', ['--frobnicate'])).code).toBe(2);
    const noConfirm = await script('rebuild-primary.sh', ['--pgdata', cluster.replica.dataDir, '--source', cluster.primary.url()]);
    expect(noConfirm.code).toBe(2);
    expect(noConfirm.stderr).toContain('--confirm');
    expect((await script('rebuild-primary.sh', ['--rewind', '--basebackup', '--confirm'])).code).toBe(2);
    expect(await inRecovery(cluster.replica)).toBe(true);
  });

  it('refuses to rebuild the current primary, which keeps taking writes', async () => {
    const res = await script('rebuild-primary.sh', [
      '--pgdata',
      cluster.primary.dataDir,
      '--source',
      cluster.primary.url(),
      '--basebackup',
      '--confirm',
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('is the current primary');
    await query(cluster.primary, 'INSERT INTO rows VALUES (11)');
    expect(await ids(cluster.primary)).toHaveLength(11);
    // Nor will setup-replication turn a running primary into a standby.
    const setup = await script('setup-replication.sh', ['--pgdata', cluster.primary.dataDir, '--primary', cluster.primary.url()]);
    expect(setup.code).toBe(1);
    expect(setup.stderr).toContain('runs as a primary');
  });

  it("after a failover that lost the old primary's last writes: chooses pg_rewind, discards them, streams from the new primary", async () => {
    // The standby stops receiving, the primary writes on (rows 100-104 only it holds), then dies.
    await caughtUp(cluster.primary, cluster.replica);
    await cluster.replica.stop('fast');
    await query(cluster.primary, 'INSERT INTO rows SELECT generate_series(100, 104)');
    await cluster.primary.stop('immediate');
    await cluster.replica.start();
    await query(newPrimary, 'SELECT pg_promote(true, 60)');
    await query(newPrimary, 'INSERT INTO rows SELECT generate_series(200, 204)');

    const dry = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      ...common(),
      '--dry-run',
    ]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/method: pg_rewind: timeline 1 .* timeline 2/);
    expect(dry.stdout).toContain('dry run: nothing changed');

    const res = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      ...common(),
      '--confirm',
    ]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/pg_rewind: .*diverged/);
    expect(res.stdout).toMatch(/streaming: the standby receives WAL through slot sav3_standby/);
    expect(await inRecovery(oldPrimary)).toBe(true);
    expect(await streamingFrom(newPrimary)).toEqual(['streaming']);
    await query(newPrimary, 'INSERT INTO rows VALUES (205)');
    await caughtUp(newPrimary, oldPrimary);
    const expected = [...Array.from({ length: 11 }, (_, i) => i + 1), 200, 201, 202, 203, 204, 205];
    expect(await ids(oldPrimary)).toEqual(expected);
    // The node kept its own port and settings; the slot exists on the new primary only.
    expect(oldPrimary.url()).toContain(String(oldPrimary.port));
    expect(await query<{ slot_name: string; active: boolean }>(newPrimary, 'SELECT slot_name, active FROM pg_replication_slots')).toEqual([
      { slot_name: 'sav3_standby', active: true },
    ]);
  }, 120_000);

  it('a failed dry run exits 1 naming why: rewinding without a data directory, a backup label that does not exist', async () => {
    const missing = join(cluster.dir, 'nowhere');
    const rewind = await script('rebuild-primary.sh', ['--pgdata', missing, '--source', newPrimary.url(), '--rewind', '--dry-run']);
    expect(rewind.code).toBe(1);
    expect(rewind.stderr).toContain('cannot rewind: no data directory');
    const label = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      ...common(),
      '--from-backup',
      'no-such-label',
      '--dry-run',
    ]);
    expect(label.code).toBe(1);
    expect(label.stderr).toContain('holds no backup labelled no-such-label');
    const auto = await script('rebuild-primary.sh', ['--pgdata', missing, '--source', newPrimary.url(), ...common(), '--dry-run']);
    expect(auto.code).toBe(0);
    expect(auto.stdout).toMatch(/not pg_rewind \(no data directory.*\); pgbackrest restore --type=standby --delta of backup latest/);
  });

  it('--from-backup restores the pre-failover backup as a standby (delta), replays the archive across the timeline switch and streams', async () => {
    const res = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      ...common(),
      '--from-backup',
      backupLabel,
      '--confirm',
    ]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('this node runs as a standby: it will be stopped');
    expect(res.stdout).toContain(`pgbackrest restore --type=standby --delta of backup ${backupLabel}`);
    await query(newPrimary, 'INSERT INTO rows VALUES (206)');
    await caughtUp(newPrimary, oldPrimary);
    expect(await ids(oldPrimary)).toEqual(await ids(newPrimary));
    expect(await streamingFrom(newPrimary)).toEqual(['streaming']);
    const cmd = (await query<{ restore_command: string }>(oldPrimary, 'SHOW restore_command'))[0]!.restore_command;
    expect(cmd).toContain('archive-get');
  }, 120_000);

  it('--basebackup rebuilds a node whose data directory is gone, on its own port', async () => {
    await oldPrimary.stop('immediate');
    rmSync(oldPrimary.dataDir, { recursive: true, force: true });
    const res = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      '--basebackup',
      '--port',
      String(oldPrimary.port),
      '--log',
      join(cluster.dir, 'rebuilt.log'),
      '--confirm',
    ]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('pg_basebackup: a full copy');
    await query(newPrimary, 'INSERT INTO rows VALUES (207)');
    await caughtUp(newPrimary, oldPrimary);
    expect(await ids(oldPrimary)).toEqual(await ids(newPrimary));
    expect(await inRecovery(oldPrimary)).toBe(true);
  }, 120_000);

  it('setup-replication fails within its timeout, exit 1, when the primary cannot be reached', async () => {
    const res = await script('setup-replication.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--primary',
      'postgresql://postgres@127.0.0.1:1/postgres',
      '--timeout',
      '2',
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('the primary does not answer');
  });

  it('refuses a fenced source (an old primary) and a stopped node on a newer timeline than the source, unless --discard-newer-timeline says its timeline was abandoned', async () => {
    await query(newPrimary, 'ALTER SYSTEM SET default_transaction_read_only = on');
    await query(newPrimary, 'SELECT pg_reload_conf()');
    await new Promise((r) => setTimeout(r, 200));
    const fenced = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      '--basebackup',
      '--confirm',
    ]);
    expect(fenced.code).toBe(1);
    expect(fenced.stderr).toContain('is fenced read-only');
    await query(newPrimary, 'ALTER SYSTEM RESET default_transaction_read_only');
    await query(newPrimary, 'SELECT pg_reload_conf()');
    // The standby is promoted (a newer timeline) and stopped: the source is now the stale one.
    await query(oldPrimary, 'SELECT pg_promote(true, 60)');
    await query(oldPrimary, 'CHECKPOINT');
    await oldPrimary.stop('fast');
    const newer = await script('rebuild-primary.sh', ['--pgdata', oldPrimary.dataDir, '--source', newPrimary.url(), '--confirm']);
    expect(newer.code).toBe(1);
    expect(newer.stderr).toMatch(/timeline 3, newer than the source's 2/);
    expect((await script('rebuild-primary.sh', ['--pgdata', oldPrimary.dataDir, '--source', newPrimary.url(), '--dry-run'])).code).toBe(1);
    // Its timeline abandoned (the API recorded the failed promotion): the operator says so, and it is rebuilt.
    const discarded = await script('rebuild-primary.sh', [
      '--pgdata',
      oldPrimary.dataDir,
      '--source',
      newPrimary.url(),
      '--discard-newer-timeline',
      '--confirm',
    ]);
    expect({ code: discarded.code, stderr: discarded.stderr.slice(-400) }).toMatchObject({ code: 0 });
    expect(discarded.stdout).toContain("newer than the source's 2: --discard-newer-timeline, its data is discarded");
    expect(await query(oldPrimary, 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
  }, 90_000);
});
