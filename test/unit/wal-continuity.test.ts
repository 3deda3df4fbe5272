import {
  backupRecovery,
  describeGap,
  inferSegmentBytes,
  newestTimeline,
  recoveryPath,
  replaySegments,
  type RecoveryPath,
  type ReplayFrom,
} from '../../src/services/backup/wal-scan.ts';
import { BackupValidator, type ValidationReport } from '../../src/services/backup/backup-validator.ts';
import type { BackupTool, StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oneFullBackup, validatorDeps } from '../support/fakes.ts';

const seg = (tl: number, n: number) =>
  `${tl.toString(16).toUpperCase().padStart(8, '0')}${'0'.repeat(8)}${n.toString(16).toUpperCase().padStart(8, '0')}`;

const MB = 1024 * 1024;
/** Recovery on the backup's own timeline (no newer history), 16 MB segments. */
const own = (timeline = 1, segmentBytes = 16 * MB): RecoveryPath => ({ timeline, forks: [], segmentBytes });
const from = (start: string, stop: string = start): ReplayFrom => ({ start, stop, startLsn: null });

describe('the archived WAL as recovery replays it: continuous, or up to the first hole', () => {
  it('a continuous archive, across a timeline switch, has no hole; the parent timeline counts up to its switch point only', () => {
    // Timeline 2 forked off timeline 1 in segment 3: from segment 3 on, recovery reads timeline 2.
    const path: RecoveryPath = { timeline: 2, forks: [{ timeline: 1, switchLsn: '0/3000100' }], segmentBytes: 16 * MB };
    const all = [seg(1, 2), seg(1, 3), seg(1, 4), seg(2, 3), seg(2, 4), seg(2, 5), '00000002.history'];
    expect(replaySegments(all, from(seg(1, 2)), path)).toEqual({
      timeline: 2,
      segments: [seg(1, 2), seg(2, 3), seg(2, 4), seg(2, 5)],
      gap: null,
      notChild: null,
      // Timeline 1 went on past its switch point (segment 4): a branch the followed history left.
      abandonedSegments: 1,
      newerTimelines: [],
    });
  });

  it("a hole on the followed timeline is a hole, even where the parent timeline's abandoned segments fill the position", () => {
    const path: RecoveryPath = { timeline: 2, forks: [{ timeline: 1, switchLsn: '0/3000100' }], segmentBytes: 16 * MB };
    // Timeline 1 went on to segment 6 before it was abandoned; timeline 2 lacks segment 4.
    const all = [seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6), seg(2, 3), seg(2, 5), seg(2, 6)];
    const { segments, gap } = replaySegments(all, from(seg(1, 2)), path);
    expect(segments).toEqual([seg(1, 2), seg(2, 3)]);
    expect(gap).toEqual({
      missing: seg(2, 4),
      lastReachable: seg(2, 3),
      nextArchived: seg(2, 5),
      segmentsBeyond: 2,
      withinBackup: false,
    });
    // An abandoned sibling branch (timeline 3 forked off 1, not in 2's history) never fills a hole either.
    expect(replaySegments([...all, seg(3, 4)], from(seg(1, 2)), path).gap).toMatchObject({ missing: seg(2, 4) });
  });

  it('a log file ends where the segment size ends it (64 MB: after 3F; 16 MB: after FF)', () => {
    const at = (log: number, n: number) =>
      `00000001${log.toString(16).toUpperCase().padStart(8, '0')}${n.toString(16).toUpperCase().padStart(8, '0')}`;
    expect(replaySegments([at(0, 0x3e), at(0, 0x3f), at(1, 0), at(1, 1)], from(at(0, 0x3e)), own(1, 64 * MB)).gap).toBeNull();
    // 16 MB segments: 0x3F is followed by 0x40 in the same log file; a missing 0x40 is a hole.
    expect(replaySegments([at(0, 0x3f), at(0, 0x41), at(0, 0xff), at(1, 0)], from(at(0, 0x3f)), own()).gap).toMatchObject({
      lastReachable: at(0, 0x3f),
      missing: at(0, 0x40),
      nextArchived: at(0, 0x41),
      segmentsBeyond: 3,
    });
    expect(replaySegments([at(0, 0xfe), at(0, 0xff), at(1, 0)], from(at(0, 0xfe)), own()).gap).toBeNull();
  });

  it('a missing segment ends what recovery can reach; what was archived after it is counted', () => {
    const { segments, gap } = replaySegments([seg(1, 2), seg(1, 3), seg(1, 5), seg(1, 6)], from(seg(1, 2)), own());
    expect(segments).toEqual([seg(1, 2), seg(1, 3)]);
    expect(gap).toEqual({ missing: seg(1, 4), lastReachable: seg(1, 3), nextArchived: seg(1, 5), segmentsBeyond: 2, withinBackup: false });
    expect(describeGap(gap!)).toContain(`has a hole after ${seg(1, 3)} (missing: ${seg(1, 4)}; next archived: ${seg(1, 5)})`);
  });

  it("the backup's own WAL incomplete is a hole even with nothing archived after it: the backup cannot be recovered", () => {
    // Its first segment missing, nothing else archived.
    expect(replaySegments([], from(seg(1, 2)), own()).gap).toEqual({
      missing: seg(1, 2),
      lastReachable: `(none: ${seg(1, 2)} is missing)`,
      nextArchived: null,
      segmentsBeyond: 0,
      withinBackup: true,
    });
    // Its stop segment missing.
    const gap = replaySegments([seg(1, 2)], from(seg(1, 2), seg(1, 3)), own()).gap!;
    expect(gap).toMatchObject({ missing: seg(1, 3), withinBackup: true });
    expect(describeGap(gap)).toContain('cannot be recovered');
    // Whole: no hole, and the end of the archive after it is no hole either.
    expect(replaySegments([seg(1, 2), seg(1, 3)], from(seg(1, 2), seg(1, 3)), own()).gap).toBeNull();
  });

  it('a backup on a branch the newest timeline abandoned is not a child of its history; one before the fork is', () => {
    // Timeline 2 forked off 1 at 0/5000100 (a point-in-time restore): a backup of timeline 1 taken after it is abandoned.
    const path: RecoveryPath = { timeline: 2, forks: [{ timeline: 1, switchLsn: '0/5000100' }], segmentBytes: 16 * MB };
    const all = [seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6), seg(1, 7), seg(2, 5), seg(2, 6)];
    expect(replaySegments(all, { start: seg(1, 2), stop: seg(1, 2), startLsn: '0/2000028' }, path).notChild).toBeNull();
    expect(replaySegments(all, { start: seg(1, 7), stop: seg(1, 7), startLsn: '0/7000028' }, path).notChild).toContain(
      'requested timeline 2 is not a child',
    );
    // A timeline not in the history at all (a sibling branch).
    const sibling: RecoveryPath = { timeline: 3, forks: [{ timeline: 1, switchLsn: '0/5000100' }], segmentBytes: 16 * MB };
    expect(replaySegments(all, { start: seg(2, 5), stop: seg(2, 5), startLsn: '0/5000200' }, sibling).notChild).toContain(
      'timeline 2, which is not in the history of timeline 3',
    );
  });

  it('a later restore to a point before the backup abandons its branch, whatever timeline numbers came between', () => {
    // Timeline 3 left timeline 2 at 0/12000000; a point-in-time restore then went back to 0/5000100 (timeline 4 off 3).
    const path: RecoveryPath = {
      timeline: 4,
      forks: [
        { timeline: 1, switchLsn: '0/3000100' },
        { timeline: 2, switchLsn: '0/12000000' },
        { timeline: 3, switchLsn: '0/5000100' },
      ],
      segmentBytes: 16 * MB,
    };
    expect(replaySegments([], { start: seg(2, 0x11), stop: seg(2, 0x11), startLsn: '0/11000028' }, path).notChild).toContain(
      'abandoned branch',
    );
    expect(replaySegments([], { start: seg(2, 4), stop: seg(2, 4), startLsn: '0/4000028' }, path).notChild).toBeNull();
  });

  it('timelines newer than the followed one are named: recovery never replays them', () => {
    const all = [seg(1, 2), seg(1, 3), seg(3, 5), '00000003.history', '00000004.history'];
    expect(replaySegments(all, from(seg(1, 2)), own(1)).newerTimelines).toEqual([3, 4]);
    expect(replaySegments([seg(1, 2)], from(seg(1, 2)), own(1)).newerTimelines).toEqual([]);
  });

  it('the followed timeline is the last of the unbroken run of history files; the segment size comes from the backup', () => {
    expect(newestTimeline(['00000002.history', '00000003.history', '00000005.history'], 1)).toBe(3);
    expect(newestTimeline(['00000002.history'], 2)).toBe(2);
    expect(inferSegmentBytes({ start: seg(1, 2), startLsn: '0/2000028' })).toBe(16 * MB);
    expect(inferSegmentBytes({ start: seg(1, 1), startLsn: '0/4000028' })).toBe(64 * MB);
    // Segment 0 of its log file: every size above the offset fits; unknown.
    expect(inferSegmentBytes({ start: '000000010000000100000000', startLsn: '1/28' })).toBeUndefined();
  });
});

describe('recoveryPath reads the followed history through the archive', () => {
  it('fetches the newest history file and, when the backup does not say it, measures the segment size', async () => {
    const fetched: string[] = [];
    const source = {
      listSegments: async () => [],
      fetchSegment: async (name: string, dest: string) => {
        fetched.push(name);
        writeFileSync(dest, name.endsWith('.history') ? '1\t0/3000100\tno recovery target specified\n' : Buffer.alloc(4 * MB));
      },
    };
    const listed = ['000000010000000100000000', '00000002.history'];
    const path = await recoveryPath(source, listed, { start: '000000010000000100000000', startLsn: '1/28' }, { timeoutMs: 5000 });
    expect(path).toEqual({ timeline: 2, forks: [{ timeline: 1, switchLsn: '0/3000100' }], segmentBytes: 4 * MB });
    expect(fetched).toEqual(['00000002.history', '000000010000000100000000']);
  });
});

describe("every backup's recovery for the inventory, from one listing", () => {
  it('reads the history file once per timeline and says what stops each backup', async () => {
    const fetched: string[] = [];
    const source = {
      listSegments: async () => [seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), seg(2, 4), seg(2, 6), '00000002.history'],
      fetchSegment: async (name: string, dest: string) => {
        fetched.push(name);
        writeFileSync(dest, '1\t0/4000100\tbefore the mistake\n');
      },
    };
    const backup = (label: string, n: number, lsn: string) => ({ label, wal: { start: seg(1, n), stop: seg(1, n) }, lsn: { start: lsn } });
    const recovery = await backupRecovery(
      source,
      [
        backup('old', 2, '0/2000028'),
        backup('abandoned', 5, '0/5000028'),
        { label: 'no-wal', wal: { start: null, stop: null }, lsn: { start: null } },
      ],
      { timeoutMs: 5000 },
    );
    expect(fetched).toEqual(['00000002.history']);
    expect(recovery.get('old')).toMatchObject({
      timeline: 2,
      segments: 3,
      toEndOfArchive: false,
      problem: expect.stringContaining(`missing: ${seg(2, 5)}`),
    });
    expect(recovery.get('abandoned')).toMatchObject({ toEndOfArchive: false, problem: expect.stringContaining('abandoned branch') });
    expect(recovery.get('no-wal')).toBeNull();
  });
});

describe('a validation to the end of the archive checks it has no hole', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-wal-continuity-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const info: StanzaInfo = {
    ...oneFullBackup,
    backups: oneFullBackup.backups.map((b) => ({
      ...b,
      wal: { start: seg(1, 2), stop: seg(1, 2) },
      lsn: { start: '0/2000028', stop: '0/2000100' },
    })),
  };
  const run = async (archived: string[]) => {
    const saved: ValidationReport[] = [];
    const tool: BackupTool = {
      info: async () => info,
      backup: async () => undefined,
      restore: async () => {
        throw new Error('stop here: restore reached');
      },
    };
    const validator = new BackupValidator(
      validatorDeps(root, {
        tool,
        info: async () => info,
        walSource: { listSegments: async () => archived, fetchSegment: async () => undefined },
        validationStore: { save: async (r) => void saved.push(r) },
      }),
    );
    const report = await validator
      .validate({ backup: 'latest' }, '0f0f0f0f-0000-4000-8000-000000000000')
      .catch((e: { report?: ValidationReport }) => e.report);
    return report ?? saved[0];
  };

  it('a hole fails the wal_continuity check (the restore alone would pass on less data); none passes it', async () => {
    const holed = await run([seg(1, 2), seg(1, 4)]);
    expect(holed?.checks.find((c) => c.name === 'wal_continuity')).toMatchObject({
      ok: false,
      detail: expect.stringContaining('has a hole after'),
    });
    const whole = await run([seg(1, 2), seg(1, 3)]);
    expect(whole?.checks.find((c) => c.name === 'wal_continuity')).toMatchObject({ ok: true });
  });
});
