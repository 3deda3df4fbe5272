import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { BackupInventory } from '../../src/services/backup/backup-inventory.ts';
import { BackupService } from '../../src/services/backup/backup-service.ts';
import { BackupValidator, type ValidationReport } from '../../src/services/backup/backup-validator.ts';
import type { BackupTool, RestoreOptions, StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import type { ArchiverStatus } from '../../src/services/backup/wal-archive.ts';
import type { WalScan } from '../../src/services/backup/wal-scan.ts';
import type { JobQueue } from '../../src/services/jobs/job-queue.ts';
import { listedBackup, validatorDeps } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

// pgBackRest lists 17:44:13 for a backup that really ended at 17:44:13.5.
const STOP = '2026-11-26T17:44:13.000Z';
const stanza: StanzaInfo = {
  stanza: 'main',
  status: { code: 0, message: 'ok' },
  archive: { min: '000000010000000000000001', max: '000000010000000000000009' },
  backups: [
    listedBackup({
      label: '20261126-174400F',
      startedAt: '2026-11-26T17:44:00.000Z',
      stoppedAt: STOP,
      wal: { start: '000000010000000000000003', stop: '000000010000000000000003' },
    }),
  ],
};
const tool: BackupTool = { info: async () => stanza, backup: async () => undefined, restore: async () => undefined };

function service(archiver: () => Promise<ArchiverStatus>) {
  const inventory = new BackupInventory({
    tool,
    archiver,
    lastValidation: async () => undefined,
    metrics: createMetrics(),
    logger: captureLogger('silent').logger,
    timeoutMs: 1000,
    cacheMs: 60_000,
    intervalMs: 60_000,
    maxAgeSeconds: 93_600,
    validationMaxAgeSeconds: 3600,
  });
  const enqueued: unknown[] = [];
  const queue = {
    liveWorkers: async () => 1,
    enqueue: async (kind: string, input: unknown) => (enqueued.push(input), { id: 'j1', kind, input, status: 'queued', createdAt: '' }),
  } as unknown as JobQueue;
  return { svc: new BackupService({ inventory, queue, activeDatabaseUrl: async () => 'postgres://x', timeoutMs: 1000 }), enqueued };
}
const healthy = async (): Promise<ArchiverStatus> => ({
  checkedAt: new Date(),
  inRecovery: false,
  currentLsn: '0/A000000',
  nextXid: '1',
  walSegmentBytes: 16 << 20,
  archivedCount: 9,
  lastArchivedWal: '000000010000000000000009',
  lastArchivedAt: new Date(),
  failedCount: 0,
  lastFailedWal: null,
  lastFailedAt: null,
  archiveMode: 'on',
});

describe('POST /admin/backups/validate target checks (BackupService)', () => {
  it('a target inside the second pgBackRest cut the stop time down to is before the backup ended: 412, from rounded up', async () => {
    const { svc, enqueued } = service(healthy);
    const err = await svc.requestValidation({ targetTime: '2026-11-26T17:44:13.500Z' }, 'op').catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 412, extra: { usableRange: { from: '2026-11-26T17:44:14.000Z' } } });
    expect(enqueued).toEqual([]);
    await svc.requestValidation({ targetTime: '2026-11-26T17:44:14.000Z' }, 'op');
    expect(enqueued).toEqual([{ backup: '20261126-174400F', targetTime: '2026-11-26T17:44:14.000Z' }]);
  });

  it('with the active database down the range is unknown: 503 with a code, not 412 with to: null', async () => {
    const { svc, enqueued } = service(async () => {
      throw new Error('connect ECONNREFUSED');
    });
    const err = await svc.requestValidation({ targetTime: '2026-11-26T17:45:00.000Z' }, 'op').catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 503, code: 'dependency_unavailable' });
    expect(enqueued).toEqual([]);
  });
});

describe('the validation job checks a time target against the archived WAL before it restores', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-validate-target-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const validator = (scan: WalScan | Error, restores: RestoreOptions[], saved: ValidationReport[]) =>
    new BackupValidator(
      validatorDeps(root, {
        tool: {
          ...tool,
          restore: async (o) => {
            restores.push(o);
            throw new Error('stop here: restore reached');
          },
        },
        walSource: { listSegments: async () => [], fetchSegment: async () => undefined },
        scan: async () => {
          if (scan instanceof Error) throw scan;
          return scan;
        },
        info: async () => stanza,
        validationStore: { save: async (r) => void saved.push(r) },
      }),
    );

  it('a target after the newest archived commit is refused, nothing restored, the report stored as refused (not failed)', async () => {
    const restores: RestoreOptions[] = [];
    const saved: ValidationReport[] = [];
    const scan = { segments: 4, restorePoints: [], lastCommitAt: '2026-11-26T17:44:19.000Z', gap: null, notChild: null };
    const report = await validator(scan, restores, saved).validate(
      { backup: '20261126-174400F', targetTime: '2026-11-26T17:44:20.000Z' },
      '2f0f0f0f-0000-4000-8000-000000000000',
    );
    expect(report.status).toBe('refused');
    expect(report.checks).toEqual([
      expect.objectContaining({ name: 'target', ok: false, detail: expect.stringContaining('2026-11-26T17:44:19.000Z') }),
    ]);
    expect(restores).toEqual([]);
    expect(saved.map((r) => r.status)).toEqual(['refused']);
  });

  it('a target the WAL cannot be read for is refused too (never a failed validation of the backup)', async () => {
    const restores: RestoreOptions[] = [];
    const saved: ValidationReport[] = [];
    const report = await validator(new Error('reading the archived WAL took longer than 300 s'), restores, saved).validate(
      { backup: '20261126-174400F', targetTime: '2026-11-26T17:44:20.000Z' },
      '3f0f0f0f-0000-4000-8000-000000000000',
    );
    expect(report.status).toBe('refused');
    expect(report.checks[0]!.detail).toContain('could not be checked');
    expect(restores).toEqual([]);
  });

  it('a target with a commit at or after it in the archive goes on to the restore', async () => {
    const restores: RestoreOptions[] = [];
    const report = await validator(
      { segments: 4, restorePoints: [], lastCommitAt: '2026-11-26T17:44:21.982Z', gap: null, notChild: null },
      restores,
      [],
    ).validate({ backup: '20261126-174400F', targetTime: '2026-11-26T17:44:20.000Z' }, '4f0f0f0f-0000-4000-8000-000000000000');
    expect(restores).toHaveLength(1);
    expect(report.checks[0]).toMatchObject({ name: 'target', ok: true });
    expect(report.status).toBe('failed'); // the fake restore throws
  });
});
