import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupValidator, type ValidationReport } from '../../src/services/backup/backup-validator.ts';
import type { BackupTool, RestoreOptions } from '../../src/services/backup/pgbackrest.ts';
import { oneFullBackup, validatorDeps } from '../support/fakes.ts';

// With the WAL range pgBackRest lists for every backup (the target check reads from its start).
const info = {
  ...oneFullBackup,
  backups: oneFullBackup.backups.map((b) => ({
    ...b,
    wal: { start: '000000010000000000000002', stop: '000000010000000000000002' },
    lsn: { start: '0/2000028', stop: '0/2000100' },
  })),
};

function validator(tool: BackupTool, root: string, saved: ValidationReport[], liveDataDirs: string[] = []) {
  return new BackupValidator(
    validatorDeps(root, {
      tool,
      // The archived WAL holds commits up to now: any past target is reachable.
      walSource: { listSegments: async () => ['000000010000000000000002'], fetchSegment: async () => undefined },
      scan: async () => ({ segments: 1, restorePoints: [], lastCommitAt: new Date().toISOString(), gap: null, notChild: null }),
      info: async () => info,
      validationStore: { save: async (r) => void saved.push(r) },
      liveDataDirs: async () => liveDataDirs,
    }),
  );
}

describe('BackupValidator with a fake pgBackRest', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-validator-unit-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('a restore that fails is a failed report, stored, with the scratch directory removed', async () => {
    const calls: RestoreOptions[] = [];
    const tool: BackupTool = {
      info: async () => info,
      backup: async () => undefined,
      restore: async (options) => {
        calls.push(options);
        writeFileSync(join(options.pgPath, 'PG_VERSION'), '15'); // half a restore
        throw new Error('pgBackRest failed: ERROR: [075]: no backup set found');
      },
    };
    const saved: ValidationReport[] = [];
    const report = await validator(tool, root, saved).validate(
      { backup: 'latest', targetTime: '2026-11-26T09:00:00.000Z' },
      '0f0f0f0f-0000-4000-8000-000000000000',
    );
    expect(report.status).toBe('failed');
    expect(report.checks).toEqual([
      expect.objectContaining({ name: 'target', ok: true }),
      expect.objectContaining({ name: 'restore', ok: false, detail: expect.stringContaining('no backup set found') }),
    ]);
    expect(calls[0]).toMatchObject({
      set: '20261126-080000F',
      target: { type: 'time', value: '2026-11-26T09:00:00.000Z' },
      archiveMode: 'off',
      targetAction: 'promote',
    });
    expect(calls[0]!.pgPath.startsWith(root)).toBe(true);
    expect(saved).toHaveLength(1);
    expect(readdirSync(root)).toEqual([]);
    expect(report.timings.teardownMs).not.toBeNull();
  });

  it('an unknown label is a failed report without touching the disk', async () => {
    const tool: BackupTool = {
      info: async () => info,
      backup: async () => undefined,
      restore: async () => {
        throw new Error('must not be called');
      },
    };
    const saved: ValidationReport[] = [];
    const report = await validator(tool, root, saved).validate({ backup: '20200101-000000F' }, '1f0f0f0f-0000-4000-8000-000000000000');
    expect(report).toMatchObject({ status: 'failed', backup: null });
    expect(report.checks[0]!.detail).toContain('not in the repository');
    expect(saved).toHaveLength(1);
  });

  it('never restores into a live data directory, even one inside the scratch root', async () => {
    let restored = false;
    const tool: BackupTool = { info: async () => info, backup: async () => undefined, restore: async () => void (restored = true) };
    const saved: ValidationReport[] = [];
    // The live server's data directory is (wrongly) the scratch root itself.
    const report = await validator(tool, root, saved, [root]).validate({ backup: 'latest' }, '2f0f0f0f-0000-4000-8000-000000000000');
    expect(restored).toBe(false);
    expect(report.status).toBe('failed');
    expect(report.checks.find((c) => !c.ok)!.detail).toContain('live data directory');
    expect(existsSync(root)).toBe(true);
  });
});
