import { archivedEndLsn, RpoTracker, type ArchiverStatus } from '../../src/services/backup/wal-archive.ts';

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

describe('archivedEndLsn', () => {
  it('is the end of the segment named by last_archived_wal, across log ids and segment sizes', () => {
    expect(archivedEndLsn('000000010000000000000002', SEG)).toBe(0x3000000n);
    expect(archivedEndLsn('0000000200000001000000FF', SEG)).toBe((1n << 32n) + 0x100n * BigInt(SEG));
    expect(archivedEndLsn('000000010000000000000003', 64 * 1024 * 1024)).toBe(4n * 64n * 1024n * 1024n);
    // A backup history file names a segment archived before it.
    expect(archivedEndLsn('000000010000000000000002.00000028.backup', SEG)).toBe(0x3000000n);
  });
  it('says nothing for timeline history files, partial segments and garbage', () => {
    for (const name of ['00000002.history', '000000010000000000000002.partial', 'x', null])
      expect(archivedEndLsn(name, SEG)).toBeUndefined();
  });
});

describe('RpoTracker', () => {
  it('is 0 while every write is archived, even with WAL past the archived end that holds no commit', () => {
    const t = new RpoTracker();
    expect(t.observe(at(0, { currentLsn: '0/3000050' }))).toBe(0);
    // Only non-transactional WAL (a checkpoint) was written: the next xid did not move.
    expect(t.observe(at(60, { currentLsn: '0/3000200' }))).toBe(0);
  });

  it('counts from the sample before the first unarchived write, and drops to 0 once it is archived', () => {
    const t = new RpoTracker();
    t.observe(at(0, {}));
    t.observe(at(10, {}));
    expect(t.observe(at(20, { currentLsn: '0/3001000', nextXid: '101' }))).toBe(10);
    expect(t.observe(at(50, { currentLsn: '0/3002000', nextXid: '105' }))).toBe(40);
    // The segment holding those writes is archived (switch): nothing exposed.
    expect(t.observe(at(55, { currentLsn: '0/4000000', nextXid: '105', lastArchivedWal: '000000010000000000000003' }))).toBe(0);
    // A new write after that counts from the sample before it, not from the first one.
    expect(t.observe(at(70, { currentLsn: '0/4000100', nextXid: '106', lastArchivedWal: '000000010000000000000003' }))).toBe(15);
  });

  it('writes archived only partly: the oldest unarchived one counts', () => {
    const t = new RpoTracker();
    t.observe(at(0, {}));
    t.observe(at(10, { currentLsn: '0/3001000', nextXid: '101' }));
    t.observe(at(20, { currentLsn: '0/4001000', nextXid: '102' }));
    // Segment 3 archived: the first write (in it) is safe, the second (in segment 4) is not.
    expect(t.observe(at(30, { currentLsn: '0/4001000', nextXid: '102', lastArchivedWal: '000000010000000000000003' }))).toBe(20);
  });

  it('while archiving fails, the exposure is at least the time since the last successful archive', () => {
    const t = new RpoTracker();
    const failing = { currentLsn: '0/3000100', lastArchivedAt: new Date(0), lastFailedAt: new Date(290_000), failedCount: 9 };
    expect(t.observe(at(300, failing))).toBe(300);
  });

  it('is 0 on a standby, and forgets what it saw there', () => {
    const t = new RpoTracker();
    t.observe(at(0, {}));
    expect(t.observe(at(10, { inRecovery: true, currentLsn: null, nextXid: null }))).toBe(0);
    expect(t.observe(at(20, { currentLsn: '0/3000100', nextXid: '101' }))).toBe(0);
    expect(t.observe(at(30, { currentLsn: '0/3000200', nextXid: '102' }))).toBe(10);
  });

  it('stays bounded in memory when nothing is ever archived, and keeps the oldest exposure', () => {
    const t = new RpoTracker();
    t.observe(at(0, { lastArchivedWal: null }));
    let last = 0;
    for (let i = 1; i <= 20_000; i += 1)
      last = t.observe(at(i, { lastArchivedWal: null, currentLsn: `0/${(0x3000000 + i * 100).toString(16)}`, nextXid: String(100 + i) }));
    expect(last).toBe(19_999 + 1);
    expect((t as unknown as { samples: unknown[] }).samples.length).toBeLessThanOrEqual(5000);
  });
});

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
