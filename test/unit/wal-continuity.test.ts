import { describeGap, replaySegments } from '../../src/services/backup/wal-scan.ts';
import { BackupValidator, type ValidationReport } from '../../src/services/backup/backup-validator.ts';
import type { BackupTool, StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oneFullBackup, validatorDeps } from '../support/fakes.ts';

const seg = (tl: number, n: number) =>
  `${tl.toString(16).toUpperCase().padStart(8, '0')}${'0'.repeat(8)}${n.toString(16).toUpperCase().padStart(8, '0')}`;

describe('the archived WAL as recovery replays it: continuous, or up to the first hole', () => {
  it('a continuous archive, across a timeline switch, has no hole', () => {
    const all = [seg(1, 2), seg(1, 3), seg(2, 3), seg(2, 4), seg(2, 5)];
    expect(replaySegments(all, seg(1, 2))).toEqual({ segments: [seg(1, 2), seg(2, 3), seg(2, 4), seg(2, 5)], gap: null });
  });

  it('a log file ends where the segment size ends it (64 MB: after 3F; 16 MB: after FF), which the listing does not say', () => {
    const at = (log: number, n: number) =>
      `00000001${log.toString(16).toUpperCase().padStart(8, '0')}${n.toString(16).toUpperCase().padStart(8, '0')}`;
    // 64 MB segments: 0x40 per log file.
    expect(replaySegments([at(0, 0x3e), at(0, 0x3f), at(1, 0), at(1, 1)], at(0, 0x3e)).gap).toBeNull();
    // 16 MB segments: 0x3F is followed by 0x40 in the same log file; a missing 0x40 is a hole.
    expect(replaySegments([at(0, 0x3f), at(0, 0x40), at(0, 0xff), at(1, 0)], at(0, 0x3f)).gap).toMatchObject({
      lastReachable: at(0, 0x40),
    });
    expect(replaySegments([at(0, 0x3f), at(0, 0x41)], at(0, 0x3f)).gap).toMatchObject({
      lastReachable: at(0, 0x3f),
      nextArchived: at(0, 0x41),
    });
    expect(replaySegments([at(0, 0xfe), at(0, 0xff), at(1, 0)], at(0, 0xfe)).gap).toBeNull();
  });

  it('a missing segment ends what recovery can reach; what was archived after it is counted', () => {
    const { segments, gap } = replaySegments([seg(1, 2), seg(1, 3), seg(1, 5), seg(1, 6)], seg(1, 2));
    expect(segments).toEqual([seg(1, 2), seg(1, 3)]);
    expect(gap).toEqual({ lastReachable: seg(1, 3), nextArchived: seg(1, 5), segmentsBeyond: 2 });
    expect(describeGap(gap!)).toContain(`has a hole after ${seg(1, 3)} (next archived: ${seg(1, 5)})`);
    // The backup's own first segment missing: nothing is reachable.
    expect(replaySegments([seg(1, 3)], seg(1, 2)).gap).toMatchObject({
      lastReachable: `(none: ${seg(1, 2)} is missing)`,
      segmentsBeyond: 1,
    });
  });
});

describe('a validation to the end of the archive checks it has no hole', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-wal-continuity-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const info: StanzaInfo = {
    ...oneFullBackup,
    backups: oneFullBackup.backups.map((b) => ({ ...b, wal: { start: seg(1, 2), stop: seg(1, 2) } })),
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
