// Backups recovery cannot start from (a branch a point-in-time restore abandoned, a hole in their own
// WAL) do not count as the newest backup, and a hole after the newest one that can is archiving
// failing (`archive_hole`): found by an outside attack on the backups (issue 13, findings 4 and 5).
import { writeFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backupAge, BackupInventory } from '../../src/services/backup/backup-inventory.ts';
import { BackupValidator, type ValidationReport } from '../../src/services/backup/backup-validator.ts';
import { BackupService } from '../../src/services/backup/backup-service.ts';
import type { BackupInfo, BackupTool, RestoreOptions, StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import { holeOf, recoverable, recoveryBlock } from '../../src/services/backup/recoverable.ts';
import { backupRecovery, type WalArchiveSource } from '../../src/services/backup/wal-scan.ts';
import type { ArchiverStatus } from '../../src/services/backup/wal-archive.ts';
import type { JobQueue } from '../../src/services/jobs/job-queue.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { listedBackup, validatorDeps } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

const seg = (tl: number, n: number) =>
  `${tl.toString(16).toUpperCase().padStart(8, '0')}${'0'.repeat(8)}${n.toString(16).toUpperCase().padStart(8, '0')}`;

/** A full backup on timeline `tl` from segment `n` to `stop` (16 MB segments: its start LSN tells the size). */
const backup = (label: string, stoppedAt: string, tl: number, n: number, stop = n): BackupInfo =>
  listedBackup({
    label,
    startedAt: stoppedAt,
    stoppedAt,
    wal: { start: seg(tl, n), stop: seg(tl, stop) },
    lsn: { start: `0/${n.toString(16).toUpperCase()}000028`, stop: `0/${stop.toString(16).toUpperCase()}000100` },
  });

/** The archive: its listing, and timeline 2's history (forked off timeline 1 in segment 4). */
const archive = (listed: () => string[]): WalArchiveSource => ({
  listSegments: async () => listed(),
  fetchSegment: async (_name: string, dest: string) => writeFileSync(dest, '1\t0/4000100\tbefore the mistake\n'),
});

// Timeline 1 to segment 5; a point-in-time restore forked timeline 2 off it in segment 4.
const forked = [seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), seg(2, 4), seg(2, 5), seg(2, 6), '00000002.history'];
const beforeFork = backup('20261125-000000F', '2026-11-25T00:00:00.000Z', 1, 2);
const abandoned = backup('20261126-000000F', '2026-11-26T00:00:00.000Z', 1, 5);

async function withRecovery(listed: string[], backups: BackupInfo[]): Promise<BackupInfo[]> {
  const recovery = await backupRecovery(
    archive(() => listed),
    backups,
    { timeoutMs: 5000 },
  );
  return backups.map((b) => ({ ...b, recovery: recovery.get(b.label) ?? null }));
}

describe("what stops a backup's recovery, read from wal-scan's own sentences", () => {
  it('a branch a point-in-time restore abandoned and a hole in its own WAL are unrecoverable; a hole after it is not', async () => {
    const [ok, gone] = await withRecovery(forked, [beforeFork, abandoned]);
    expect(recoveryBlock(ok!.recovery)).toBeNull();
    expect(recoveryBlock(gone!.recovery)).toBe('not_child');
    expect(recoverable(gone!)).toBe(false);

    const [own] = await withRecovery([seg(1, 2), seg(1, 4)], [backup('b', '2026-11-26T00:00:00.000Z', 1, 2, 3)]);
    expect(recoveryBlock(own!.recovery)).toBe('own_wal_incomplete');
    expect(recoverable(own!)).toBe(false);

    const [holed] = await withRecovery([seg(1, 2), seg(1, 3), seg(1, 6)], [backup('c', '2026-11-26T00:00:00.000Z', 1, 2)]);
    expect(recoveryBlock(holed!.recovery)).toBe('hole');
    expect(recoverable(holed!)).toBe(true);
    expect(holeOf(holed!.recovery)).toEqual({ missing: seg(1, 4), nextArchived: seg(1, 6) });

    // Timelines the followed one does not reach (a history file missing): said, not a hole, recoverable.
    const [stranded] = await withRecovery([seg(1, 2), seg(1, 3), seg(3, 5)], [backup('d', '2026-11-26T00:00:00.000Z', 1, 2)]);
    expect(stranded!.recovery).toMatchObject({ toEndOfArchive: false, problem: expect.stringContaining('timeline(s) 3') });
    expect(recoveryBlock(stranded!.recovery)).toBe('other');
    expect(recoverable(stranded!)).toBe(true);
    expect(holeOf(stranded!.recovery)).toBeNull();

    // Unknown (the archive was not read) is not a reason to skip a backup; a failed one always is.
    expect(recoverable({ error: false, recovery: null })).toBe(true);
    expect(recoverable({ error: true, recovery: null })).toBe(false);
  });

  it('backupAge (BackupTooOld for the scripts) skips a newer backup on an abandoned branch and names it', async () => {
    const backups = await withRecovery(forked, [beforeFork, abandoned]);
    const age = backupAge(backups, 26 * 3600, Date.parse('2026-11-26T01:00:00Z'));
    expect(age).toMatchObject({
      newestFullOrDiff: { label: beforeFork.label },
      ageSeconds: 25 * 3600,
      tooOld: false,
      unrecoverable: [{ label: abandoned.label, problem: expect.stringContaining('is not a child') }],
    });
    expect(backupAge(backups, 24 * 3600, Date.parse('2026-11-26T01:00:00Z')).tooOld).toBe(true);
  });
});

const archiver = (over: Partial<ArchiverStatus> = {}): ArchiverStatus => ({
  checkedAt: new Date(),
  inRecovery: false,
  currentLsn: '0/7000000',
  nextXid: '10',
  walSegmentBytes: 16 << 20,
  archivedCount: 1,
  lastArchivedWal: seg(1, 6),
  lastArchivedAt: new Date(),
  failedCount: 0,
  lastFailedWal: null,
  lastFailedAt: null,
  archiveMode: 'on',
  ...over,
});

function inventory(listed: () => string[], backups: () => BackupInfo[], status: () => ArchiverStatus = () => archiver()) {
  const metrics = createMetrics();
  const tool: BackupTool = {
    info: async () => ({
      stanza: 'main',
      status: { code: 0, message: 'ok' },
      archive: {
        min: seg(1, 2),
        max: listed()
          .filter((s) => !s.endsWith('.history'))
          .sort()
          .at(-1)!,
      },
      backups: backups(),
      readAt: new Date().toISOString(),
    }),
    backup: async () => undefined,
    restore: async () => undefined,
  };
  const inv = new BackupInventory({
    tool,
    walSource: archive(listed),
    archiver: async () => status(),
    lastValidation: async () => undefined,
    metrics,
    logger: captureLogger('silent').logger,
    timeoutMs: 5000,
    cacheMs: 0,
    intervalMs: 60_000,
    maxAgeSeconds: 26 * 3600,
    validationMaxAgeSeconds: 3600,
  });
  return { inv, metrics };
}

describe('the inventory: abandoned backups do not count, a hole after the newest recoverable one is failing', () => {
  it('sav3_backup_last_success_timestamp_seconds counts the newest recoverable backup, not one on an abandoned branch', async () => {
    const { inv, metrics } = inventory(
      () => forked,
      () => [beforeFork, abandoned],
    );
    await inv.sample();
    expect(await metrics.registry.getSingleMetricAsString('sav3_backup_last_success_timestamp_seconds')).toContain(
      `sav3_backup_last_success_timestamp_seconds{type="full"} ${Date.parse(beforeFork.stoppedAt) / 1000}`,
    );
    const body = await inv.inventory();
    expect(body.backupAge.newestFullOrDiff?.label).toBe(beforeFork.label);
    expect(body.backupAge.unrecoverable).toEqual([{ label: abandoned.label, problem: expect.stringContaining('abandoned branch') }]);
    // No hole on the followed history: not failing.
    expect(body.archiving).toMatchObject({ failing: false, failure: null });
  });

  it('a hole after the newest recoverable backup is archive_hole: gauge, counted once per hole, RPO exposure from when it was seen; a new backup clears it', async () => {
    // archive_command was /bin/true for segments 4 and 5, then reset: the repository holds 6 and on.
    let listed = [seg(1, 2), seg(1, 3), seg(1, 6), seg(1, 7)];
    let backups = [backup('20261126-000000F', '2026-11-26T00:00:00.000Z', 1, 2)];
    const { inv, metrics } = inventory(
      () => listed,
      () => backups,
    );
    const first = await inv.archiver();
    expect(first.assessment).toMatchObject({
      failing: true,
      failure: { code: 'archive_hole', message: expect.stringContaining(`stops before ${seg(1, 4)}`) },
    });
    await new Promise((r) => setTimeout(r, 1100));
    const later = await inv.archiver();
    expect(later.assessment.failure?.code).toBe('archive_hole');
    expect(later.rpoExposureSeconds).toBeGreaterThanOrEqual(1);
    let text = await metrics.registry.metrics();
    expect(text).toContain('sav3_wal_archiving_failing{reason="archive_hole"} 1');
    expect(text).toContain('sav3_wal_archive_failures_total{reason="archive_hole"} 2'); // segments 4 and 5, once
    expect(text).toMatch(/sav3_rpo_exposure_seconds\{component="database"\} [1-9]/);
    expect((await inv.inventory()).archiving).toMatchObject({ failing: true, failure: { code: 'archive_hole' } });

    // A backup after the hole: recovery from it reaches the end of the archive; nothing is failing.
    listed = [...listed, seg(1, 8)];
    backups = [...backups, backup('20261126-010000F', '2026-11-26T01:00:00.000Z', 1, 7, 8)];
    const healed = await inv.archiver();
    expect(healed.assessment).toMatchObject({ failing: false, failure: null });
    text = await metrics.registry.metrics();
    expect(text).toContain('sav3_wal_archiving_failing{reason="archive_hole"} 0');
    expect(text).toContain('sav3_wal_archive_failures_total{reason="archive_hole"} 2');
    expect(text).toContain('sav3_rpo_exposure_seconds{component="database"} 0');
  });

  it("archive_command's own failure keeps precedence; the hole is still counted and floors the exposure", async () => {
    const listed = [seg(1, 2), seg(1, 6)];
    let failing = false;
    const { inv, metrics } = inventory(
      () => listed,
      () => [backup('20261126-000000F', '2026-11-26T00:00:00.000Z', 1, 2)],
      () =>
        failing ? archiver({ lastFailedAt: new Date(), lastFailedWal: seg(1, 7), lastArchivedAt: new Date(Date.now() - 500) }) : archiver(),
    );
    expect((await inv.archiver()).assessment.failure?.code).toBe('archive_hole');
    failing = true;
    await new Promise((r) => setTimeout(r, 1100));
    const read = await inv.archiver();
    expect(read.assessment.failure?.code).toBe('archive_command_failed');
    expect(read.rpoExposureSeconds).toBeGreaterThanOrEqual(1); // from the hole, not from the last archive 0.5 s ago
    expect(await metrics.registry.metrics()).toContain('sav3_wal_archive_failures_total{reason="archive_hole"} 3'); // 3, 4, 5
  });
});

describe('validation: latest is the newest recoverable backup; a label on an abandoned branch fails without a restore', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-recoverable-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const run = async (input: { backup: string }) => {
    const backups = await withRecovery(forked, [beforeFork, abandoned]);
    const info: StanzaInfo = { stanza: 'main', status: { code: 0, message: 'ok' }, archive: { min: null, max: null }, backups };
    const restores: RestoreOptions[] = [];
    const saved: ValidationReport[] = [];
    const tool: BackupTool = {
      info: async () => info,
      backup: async () => undefined,
      restore: async (options) => {
        restores.push(options);
        throw new Error('stop here: restore reached');
      },
    };
    const validator = new BackupValidator(
      validatorDeps(root, {
        tool,
        info: async () => info,
        walSource: archive(() => forked),
        validationStore: { save: async (r) => void saved.push(r) },
        // The active primary is on the timeline the point-in-time restore made.
        liveTimeline: async () => 2,
      }),
    );
    const report = await validator.validate(input, '0f0f0f0f-0000-4000-8000-000000000000');
    return { report, restores };
  };

  it('latest skips the newer backup on the abandoned branch and validates the one before the fork', async () => {
    const { report, restores } = await run({ backup: 'latest' });
    expect(report.backup?.label).toBe(beforeFork.label);
    expect(report.checks.find((c) => c.name === 'wal_continuity')).toMatchObject({ ok: true });
    expect(restores.map((r) => r.set)).toEqual([beforeFork.label]);
  });

  it('the abandoned backup by label is validated and fails with the reason, nothing restored', async () => {
    const { report, restores } = await run({ backup: abandoned.label });
    expect(report.status).toBe('failed');
    expect(report.checks).toEqual([
      expect.objectContaining({
        name: 'wal_continuity',
        ok: false,
        detail: expect.stringMatching(/cannot be recovered with this archive: .*is not a child of this server's history.*; not restored$/),
      }),
    ]);
    expect(restores).toEqual([]);
  });

  it('POST /admin/backups/validate {} with no recoverable backup is 412 naming why', async () => {
    const backups = await withRecovery(forked, [abandoned]);
    const info: StanzaInfo = { stanza: 'main', status: { code: 0, message: 'ok' }, archive: { min: null, max: null }, backups };
    const service = new BackupService({
      inventory: { info: async () => info } as unknown as BackupInventory,
      queue: { liveWorkers: async () => 1, enqueue: async () => ({}) } as unknown as JobQueue,
      activeDatabaseUrl: async () => 'postgresql://unused',
      timeoutMs: 1000,
    });
    const err = await service.requestValidation({}, 'op').catch((e: unknown) => e as Error);
    expect(err).toMatchObject({
      status: 412,
      extra: { unrecoverable: [{ label: abandoned.label, problem: expect.stringContaining('is not a child') }] },
    });
    expect((err as Error).message).toBe('no backup in the repository can be recovered with this archive');
  });
});
