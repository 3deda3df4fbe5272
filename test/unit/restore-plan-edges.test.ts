// Found by an outside attack on issue 13: a target time inside a backup's last listed second, a
// restore point name written twice, and the state left by a pgBackRest restore killed halfway.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterFailure } from '../../src/restore-database.ts';
import { checkTarget, planRestore, RestorePlanError } from '../../src/services/backup/database-restore.ts';
import { dataDirState, proveDataDirectory } from '../../src/services/backup/data-dir-identity.ts';
import type { StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import type { WalScan } from '../../src/services/backup/wal-scan.ts';
import { listedBackup } from '../support/fakes.ts';

const info: StanzaInfo = {
  stanza: 'main',
  status: { code: 0, message: 'ok' },
  archive: { min: '000000010000000000000001', max: '000000010000000000000009' },
  backups: [
    listedBackup({ label: '20261126-080000F', startedAt: '2026-11-26T08:00:00.000Z', stoppedAt: '2026-11-26T08:00:05.000Z' }),
    // Listed 09:00:05: it really ended somewhere in 09:00:05.000–09:00:05.999.
    listedBackup({
      label: '20261126-090000F',
      startedAt: '2026-11-26T09:00:00.000Z',
      stoppedAt: '2026-11-26T09:00:05.000Z',
      lsn: { start: '0/5000028', stop: '0/5000100' },
    }),
  ],
};

describe('planRestore: a backup counts as ended at the end of its listed second (as the API validate does)', () => {
  it('latest with a target inside the last listed second picks the backup before', () => {
    expect(planRestore(info, { backup: 'latest', targetTime: '2026-11-26T09:00:05.500Z' }).backup.label).toBe('20261126-080000F');
    expect(planRestore(info, { backup: 'latest', targetTime: '2026-11-26T09:00:06.000Z' }).backup.label).toBe('20261126-090000F');
  });

  it('that backup named for a target inside its last listed second is refused with where the usable range starts', () => {
    expect(() => planRestore(info, { backup: '20261126-090000F', targetTime: '2026-11-26T09:00:05.500Z' })).toThrow(
      /may have ended until 2026-11-26T09:00:06.000Z.*target must be at or after 2026-11-26T09:00:06.000Z/,
    );
    expect(() => planRestore(info, { backup: 'latest', targetTime: '2026-11-26T08:00:05.999Z' })).toThrow(
      /no backup ended before .*by 2026-11-26T08:00:06.000Z \(listed 2026-11-26T08:00:05.000Z\)/,
    );
  });
});

describe('checkTarget: a restore point name written more than once', () => {
  const plan = planRestore(info, { backup: '20261126-090000F', targetName: 'rp1' });
  const scan = (points: WalScan['restorePoints']): WalScan => ({
    segments: 3,
    gap: null,
    restorePoints: points,
    lastCommitAt: '2026-11-26T10:00:00.000Z',
    notChild: null,
  });

  it('is refused naming each LSN recovery would replay (it stops at the first)', () => {
    const twice = scan([
      { name: 'rp1', lsn: '0/050323E8', at: '2026-11-26T09:10:00.000Z' },
      { name: 'other', lsn: '0/05040000', at: null },
      { name: 'rp1', lsn: '0/06000100', at: '2026-11-26T09:50:00.000Z' },
    ]);
    expect(() => checkTarget(plan, twice)).toThrow(RestorePlanError);
    expect(() => checkTarget(plan, twice)).toThrow(/rp1 appears 2 times .*0\/050323E8.*0\/06000100.*stops at the first \(0\/050323E8\)/);
  });

  it('a point of the name before the backup started is not replayed: the one after counts', () => {
    const once = scan([
      { name: 'rp1', lsn: '0/04FFFF00', at: null },
      { name: 'rp1', lsn: '0/06000100', at: null },
    ]);
    expect(checkTarget(plan, once)).toBe('restore point rp1 at 0/06000100 is in the archived WAL');
  });
});

describe('an interrupted pgBackRest restore in the data directory', () => {
  let dir: string;
  const manifest = (systemId: string) =>
    `[backrest]\nbackrest-format=5\n\n[backup]\nbackup-label="20261126-090000F"\n\n[backup:db]\ndb-id=1\ndb-system-id=${systemId}\ndb-version="15"\n`;
  const prove = (pgData: string, stanzaSystemId = '7712589965576908296') =>
    proveDataDirectory({
      pgData,
      databaseUrl: 'postgresql://postgres@127.0.0.1:1/postgres',
      pgBin: '/usr/lib/postgresql/15/bin',
      osUser: 'postgres',
      stanzaSystemId,
      allowStandby: false,
    });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sav3-interrupted-'));
    mkdirSync(join(dir, 'global'));
    writeFileSync(join(dir, 'PG_VERSION'), '15\n');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("pgBackRest's manifest of the stanza's cluster and no control file: accepted as the restore target", async () => {
    writeFileSync(join(dir, 'backup.manifest'), manifest('7712589965576908296'));
    expect(dataDirState(dir)).toBe('interrupted_restore');
    await expect(prove(dir)).resolves.toMatch(/holds an interrupted pgBackRest restore \(backup 20261126-090000F/);
  });

  it("another cluster's manifest, or no manifest: refused", async () => {
    writeFileSync(join(dir, 'backup.manifest'), manifest('1234'));
    await expect(prove(dir)).rejects.toThrow(/system identifier 1234, the backup stanza has 7712589965576908296/);
    writeFileSync(join(dir, 'backup.manifest'), 'not an ini of pgBackRest\n');
    await expect(prove(dir)).rejects.toThrow(/holds no PostgreSQL control file .* nor an interrupted pgBackRest restore/);
    rmSync(join(dir, 'backup.manifest'));
    expect(dataDirState(dir)).toBe('no_control_file');
    await expect(prove(dir)).rejects.toThrow(/nor an interrupted pgBackRest restore/);
  });

  it('the failure message says whether PostgreSQL can start on what is left', () => {
    const plan = { backup: { label: '20261126-090000F' }, target: { type: 'end_of_archive' } };
    const done = ['read-only on', 'stop PostgreSQL'];
    const intact = afterFailure(plan, dir, done, 'intact').join('\n');
    expect(intact).toContain('starting PostgreSQL brings back the data it held');
    expect(intact).toContain('pg_ctl -D');
    const interrupted = afterFailure(plan, dir, done, 'interrupted_restore').join('\n');
    expect(interrupted).toContain('holds an interrupted pgBackRest restore');
    expect(interrupted).toContain('PostgreSQL cannot start on it');
    expect(interrupted).not.toContain('pg_ctl');
    expect(interrupted).toContain('--from-backup 20261126-090000F --confirm');
  });
});
