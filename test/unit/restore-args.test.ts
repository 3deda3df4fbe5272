import { parseArgs } from '../../src/restore-database.ts';
import { planRestore } from '../../src/services/backup/database-restore.ts';
import { oneFullBackup } from '../support/fakes.ts';

describe('restore-database.sh arguments', () => {
  const withTime = (t: string) => parseArgs(['--from-backup', 'latest', '--target-time', t, '--dry-run']);

  it('a --target-time that passes the usage check is one the plan takes (zone as ±HH, ±HHMM or ±HH:MM)', () => {
    for (const t of ['2026-11-26T08:15:00+00', '2026-11-26T08:15:00+0530', '2026-11-26 08:15Z', '2026-11-26T08:15:00.25-03:00']) {
      const args = withTime(t);
      expect(typeof args).toBe('object');
      const time = (args as { targetTime: string }).targetTime;
      expect(Number.isNaN(Date.parse(time))).toBe(false);
      // Planning reaches the backup choice (the time is read), not "is not a time".
      expect(() => planRestore({ ...oneFullBackup, backups: [] }, { backup: 'latest', targetTime: time })).toThrow(
        /no backup ended before/,
      );
    }
    expect((withTime('2026-11-26T08:15:00+00') as { targetTime: string }).targetTime).toBe('2026-11-26T08:15:00+00:00');
  });

  it('a time that does not exist is a usage error (exit 2), not a failure later', () => {
    for (const t of ['2026-02-30T08:15:00Z', '2026-13-01T08:15:00Z', '2026-11-26T24:15:00Z', '2026-11-26T08:15:00', 'yesterday'])
      expect(withTime(t)).toMatch(/--target-time must be ISO 8601 with a zone/);
  });
});
