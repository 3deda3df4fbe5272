import { ArchiveCheck } from '../../src/services/backup/archive-check.ts';
import type { ArchiverStatus } from '../../src/services/backup/wal-archive.ts';

const T0 = Date.parse('2026-11-26T12:00:00Z');
const base: ArchiverStatus = {
  checkedAt: new Date(T0),
  inRecovery: false,
  currentLsn: '0/E000100',
  nextXid: '100',
  walSegmentBytes: 16 << 20,
  archivedCount: 13,
  lastArchivedWal: '00000001000000000000000A',
  lastArchivedAt: new Date(T0 - 60_000),
  failedCount: 0,
  lastFailedWal: null,
  lastFailedAt: null,
  archiveMode: 'on',
  ready: { count: 0, oldestWal: null, oldestAt: null },
};
const at = (s: number, patch: Partial<ArchiverStatus> = {}): ArchiverStatus => ({ ...base, checkedAt: new Date(T0 + s * 1000), ...patch });
const repo = (max: string | null, s: number) => ({ max, readAt: new Date(T0 + s * 1000) });

describe('ArchiveCheck: PostgreSQL says archived, the repository decides', () => {
  it('segments PostgreSQL reports archived that the repository lacks are archive_missing_in_repository, counted once each', () => {
    const check = new ArchiveCheck({ stallMs: 60_000 });
    const claimed = { lastArchivedWal: '00000001000000000000000D', lastArchivedAt: new Date(T0 - 30_000) };
    const a = check.assess(at(0, claimed), repo('00000001000000000000000A', 0));
    expect(a.failing).toBe(true);
    expect(a.failure?.code).toBe('archive_missing_in_repository');
    expect(a.failure?.message).toContain('00000001000000000000000D');
    expect(a.archivedWal).toBe('00000001000000000000000A');
    expect(a.newFailures).toEqual({ archive_missing_in_repository: 3 });
    // The writes in the oldest missing segment are at least as old as PostgreSQL's last archive.
    expect(a.missingSince?.getTime()).toBe(T0 - 30_000);
    // Seen again: not counted again; one more segment: one more failure.
    expect(check.assess(at(15, claimed), repo('00000001000000000000000A', 15)).newFailures).toEqual({});
    const e = { lastArchivedWal: '00000001000000000000000E', lastArchivedAt: new Date(T0 + 29_000) };
    const more = check.assess(at(30, e), repo('00000001000000000000000A', 30));
    expect(more.failing).toBe(true);
    expect(more.newFailures).toEqual({}); // within the grace of that listing
    expect(check.assess(at(45, e), repo('00000001000000000000000A', 45)).newFailures).toEqual({
      archive_missing_in_repository: 1,
    });
  });

  it('an empty repository (archive_command pointing elsewhere) is missing every segment', () => {
    const a = new ArchiveCheck({ stallMs: 60_000 }).assess(at(0), repo(null, 0));
    expect(a.failure?.code).toBe('archive_missing_in_repository');
    expect(a.archivedWal).toBeNull();
  });

  it('a segment archived after pgBackRest info was read (within the grace) is not a failure', () => {
    const check = new ArchiveCheck({ stallMs: 60_000 });
    // Archived 2 s before the repository was listed: the listing may predate it.
    const a = check.assess(
      at(0, { lastArchivedWal: '00000001000000000000000B', lastArchivedAt: new Date(T0 - 2000) }),
      repo('00000001000000000000000A', 0),
    );
    expect(a).toMatchObject({ failing: false, failure: null, archivedWal: '00000001000000000000000B', newFailures: {} });
    // The repository, read later, holds it.
    expect(check.assess(at(15, { lastArchivedWal: '00000001000000000000000B' }), repo('00000001000000000000000B', 15)).failing).toBe(false);
  });

  it('a busy primary (the last archive always recent) is still caught: the segment seen reported before the listing must be in it', () => {
    const check = new ArchiveCheck({ stallMs: 60_000 });
    check.assess(at(0, { lastArchivedWal: '00000001000000000000000B', lastArchivedAt: new Date(T0) }), repo('00000001000000000000000A', 0));
    const later = check.assess(
      at(20, { lastArchivedWal: '00000001000000000000000C', lastArchivedAt: new Date(T0 + 19_000) }),
      repo('00000001000000000000000A', 20),
    );
    expect(later.failure?.code).toBe('archive_missing_in_repository');
    expect(later.failure?.message).toContain('00000001000000000000000B');
  });

  it('a repository on a newer timeline than the last archived segment is not a failure', () => {
    const a = new ArchiveCheck({ stallMs: 60_000 }).assess(at(0), repo('000000020000000000000009', 0));
    expect(a.failing).toBe(false);
  });

  it('.ready segments older than the stall bound are archive_not_progressing; younger ones are not', () => {
    const check = new ArchiveCheck({ stallMs: 60_000 });
    const young = { ready: { count: 2, oldestWal: '00000001000000000000000B', oldestAt: new Date(T0 - 30_000) } };
    expect(check.assess(at(0, young), repo('00000001000000000000000A', 0)).failing).toBe(false);
    const old = check.assess(at(40, young), repo('00000001000000000000000A', 40));
    expect(old.failure?.code).toBe('archive_not_progressing');
    expect(old.failure?.message).toContain('00000001000000000000000B');
    expect(old.stalledSince?.getTime()).toBe(T0 - 30_000);
    expect(old.newFailures).toEqual({ archive_not_progressing: 2 });
    const three = { ready: { ...young.ready, count: 3 } };
    expect(check.assess(at(55, three), repo('00000001000000000000000A', 55)).newFailures).toEqual({ archive_not_progressing: 1 });
    // Archived again: no longer failing.
    expect(check.assess(at(70, { ready: { count: 0, oldestWal: null, oldestAt: null } }), undefined).failing).toBe(false);
  });

  it('unknown .ready files (no pg_monitor) and a standby decide nothing', () => {
    const check = new ArchiveCheck({ stallMs: 60_000 });
    expect(check.assess(at(0, { ready: null }), undefined).failing).toBe(false);
    expect(check.assess(at(0, { inRecovery: true }), repo(null, 0)).failing).toBe(false);
  });

  it('archive_command failures stay archive_command_failed', () => {
    const a = new ArchiveCheck({ stallMs: 60_000 }).assess(
      at(0, { lastFailedAt: new Date(T0 - 1000), lastFailedWal: '00000001000000000000000B', failedCount: 3 }),
      repo('00000001000000000000000A', 0),
    );
    expect(a.failure?.code).toBe('archive_command_failed');
  });

  // Found by an outside attack: with archive_mode off nothing waits and nothing fails; only the
  // RPO figure grew, until its own alert.
  it('archive_mode off on the primary with a repository is archive_not_progressing at once; on a standby or with no repository it decides nothing', () => {
    const a = new ArchiveCheck({ stallMs: 60_000 }).assess(at(0, { archiveMode: 'off' }), repo('00000001000000000000000A', 0));
    expect(a).toMatchObject({
      failing: true,
      failure: { code: 'archive_not_progressing', message: expect.stringContaining('archive_mode is off') },
    });
    expect(new ArchiveCheck({ stallMs: 60_000 }).assess(at(0, { archiveMode: 'off', inRecovery: true }), repo(null, 0)).failing).toBe(
      false,
    );
    // No repository configured (no pgBackRest): archiving is not this service's to judge.
    expect(new ArchiveCheck({ stallMs: 60_000 }).assess(at(0, { archiveMode: 'off' }), undefined).failing).toBe(false);
  });
});
