import { RpoTracker, type ArchiverStatus } from '../../src/services/backup/wal-archive.ts';

const SEG = 16 * 1024 * 1024;
const BOOT1 = new Date('2026-11-26T00:00:00Z');
const BOOT2 = new Date('2026-11-26T00:01:20Z');
const base: ArchiverStatus = {
  checkedAt: new Date(0),
  inRecovery: false,
  currentLsn: '0/3000000',
  nextXid: '100',
  walSegmentBytes: SEG,
  archivedCount: 2,
  lastArchivedWal: '000000010000000000000002',
  lastArchivedAt: new Date(0),
  failedCount: 0,
  lastFailedWal: null,
  lastFailedAt: null,
  archiveMode: 'on',
  postmasterStartedAt: BOOT1,
};
const at = (s: number, patch: Partial<ArchiverStatus>): ArchiverStatus => ({ ...base, checkedAt: new Date(s * 1000), ...patch });

describe('RpoTracker across interrupted samples', () => {
  it('a write right after a restart counts from the first sample after it, not from the last one before the outage', () => {
    const t = new RpoTracker();
    expect(t.observe(at(0, { currentLsn: '0/3000050' }))).toBe(0);
    expect(t.observe(at(5, { currentLsn: '0/3000050' }))).toBe(0);
    // PostgreSQL down from 6 s to 80 s; restarted (a new postmaster start time), then a write.
    expect(t.observe(at(85, { currentLsn: '0/3001000', nextXid: '101', postmasterStartedAt: BOOT2 }))).toBe(0);
    expect(t.observe(at(90, { currentLsn: '0/3001000', nextXid: '101', postmasterStartedAt: BOOT2 }))).toBe(5);
    // A write seen between two ordinary samples still counts from the sample before it.
    const u = new RpoTracker();
    u.observe(at(0, { currentLsn: '0/3000050' }));
    u.observe(at(5, { currentLsn: '0/3001000', nextXid: '101' }));
    expect(u.observe(at(90, { currentLsn: '0/3001000', nextXid: '101' }))).toBe(90);
  });

  it('after failed reads (interrupt), the write seen across the gap counts from the first sample after it', () => {
    const t = new RpoTracker();
    t.observe(at(0, { currentLsn: '0/3000050' }));
    t.interrupt();
    t.interrupt();
    expect(t.observe(at(60, { currentLsn: '0/3001000', nextXid: '105' }))).toBe(0);
    expect(t.observe(at(75, { currentLsn: '0/3001000', nextXid: '105' }))).toBe(15);
  });

  it('an older unarchived write stays counted from before the gap (the gap never hides real exposure)', () => {
    const t = new RpoTracker();
    t.observe(at(0, { currentLsn: '0/3000050' }));
    t.observe(at(5, { currentLsn: '0/3000900', nextXid: '101' }));
    t.interrupt();
    expect(t.observe(at(60, { currentLsn: '0/3001000', nextXid: '105' }))).toBe(60);
  });

  it('after a restore to an earlier point (the WAL position went back): only writes of the restored server count', () => {
    const t = new RpoTracker();
    t.observe(at(0, { currentLsn: '0/5000050', lastArchivedWal: '000000010000000000000004' }));
    // Unarchived writes on the old history, then the restore: a new server at an earlier position.
    t.observe(at(10, { currentLsn: '0/5001000', nextXid: '200', lastArchivedWal: '000000010000000000000004' }));
    // The restored server (timeline 2) archived its first segments; the old samples are far ahead.
    const restored = { postmasterStartedAt: BOOT2, lastArchivedWal: '000000020000000000000002' };
    expect(t.observe(at(420, { currentLsn: '0/3500000', nextXid: '150', ...restored }))).toBe(0);
    expect(t.observe(at(425, { currentLsn: '0/3500100', nextXid: '151', ...restored }))).toBe(5);
    expect(t.observe(at(495, { currentLsn: '0/3500100', nextXid: '151', ...restored }))).toBe(75);
  });
});
