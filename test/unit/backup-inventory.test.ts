import { backupAge, BackupInventory } from '../../src/services/backup/backup-inventory.ts';
import { BackupToolError, type BackupTool, type StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import type { ArchiverStatus } from '../../src/services/backup/wal-archive.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { listedBackup } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

const info = (stops: [string, 'full' | 'diff' | 'incr', boolean][]): StanzaInfo => ({
  stanza: 'main',
  status: { code: 0, message: 'ok' },
  archive: { min: null, max: null },
  backups: stops.map(([stop, type, error], i) =>
    listedBackup({ label: `2026112${i}-000000F`, type, error, startedAt: stop, stoppedAt: stop }),
  ),
});

const archiver: ArchiverStatus = {
  checkedAt: new Date(),
  inRecovery: false,
  currentLsn: '0/3000000',
  nextXid: '1',
  walSegmentBytes: 16 << 20,
  archivedCount: 1,
  lastArchivedWal: '000000010000000000000002',
  lastArchivedAt: new Date(),
  failedCount: 0,
  lastFailedWal: null,
  lastFailedAt: null,
  archiveMode: 'on',
};

function inventory(
  tool: BackupTool | undefined,
  overrides: { cacheMs?: number; archiver?: () => Promise<ArchiverStatus>; archiveStallMs?: number } = {},
) {
  const metrics = createMetrics();
  const inv = new BackupInventory({
    tool,
    archiver: overrides.archiver ?? (async () => ({ ...archiver, checkedAt: new Date() })),
    lastValidation: async () => new Date('2026-11-26T00:00:00Z'),
    metrics,
    logger: captureLogger('silent').logger,
    timeoutMs: 1000,
    cacheMs: overrides.cacheMs ?? 60_000,
    intervalMs: 60_000,
    maxAgeSeconds: 93_600,
    validationMaxAgeSeconds: 3600,
    archiveStallMs: overrides.archiveStallMs,
  });
  return { inv, metrics };
}

describe('BackupInventory', () => {
  it('reads pgBackRest once for concurrent callers and serves the cache until it expires', async () => {
    let calls = 0;
    const tool: BackupTool = {
      info: async () => ((calls += 1), await new Promise((r) => setTimeout(r, 20)), info([])),
      backup: async () => undefined,
      restore: async () => undefined,
    };
    const { inv } = inventory(tool);
    await Promise.all(Array.from({ length: 20 }, () => inv.info()));
    await inv.info();
    expect(calls).toBe(1);
    await inv.info(true);
    expect(calls).toBe(2);
  });

  it('maps pgBackRest failures to 503 with their code, and marks the dependency down', async () => {
    const { inv, metrics } = inventory({
      info: async () => {
        throw new BackupToolError('repository_unreachable', 'the pgBackRest repository is unreachable');
      },
      backup: async () => undefined,
      restore: async () => undefined,
    });
    await expect(inv.info()).rejects.toMatchObject({ status: 503, code: 'repository_unreachable' });
    expect(await metrics.registry.getSingleMetricAsString('sav3_dependency_up')).toContain(
      'sav3_dependency_up{dependency="pgbackrest",target="repository"} 0',
    );
    const { inv: none } = inventory(undefined);
    await expect(none.info()).rejects.toMatchObject({ status: 503, code: 'backups_not_configured' });
  });

  it('exports the newest successful backup per type (failed ones do not count) and the configured bounds', async () => {
    const tool: BackupTool = {
      info: async () =>
        info([
          ['2026-11-25T00:00:00.000Z', 'full', false],
          ['2026-11-25T12:00:00.000Z', 'diff', false],
          ['2026-11-26T00:00:00.000Z', 'full', true],
        ]),
      backup: async () => undefined,
      restore: async () => undefined,
    };
    const { inv, metrics } = inventory(tool);
    await inv.sample();
    const text = await metrics.registry.metrics();
    expect(text).toContain(`sav3_backup_last_success_timestamp_seconds{type="full"} ${Date.parse('2026-11-25T00:00:00Z') / 1000}`);
    expect(text).toContain(`sav3_backup_last_success_timestamp_seconds{type="diff"} ${Date.parse('2026-11-25T12:00:00Z') / 1000}`);
    expect(text).toContain('sav3_backup_last_success_timestamp_seconds{type="incr"} 0');
    expect(text).toContain('sav3_backup_max_age_seconds 93600');
    expect(text).toContain('sav3_backup_validation_max_age_seconds 3600');
    expect(text).toContain(`sav3_backup_validation_last_success_timestamp_seconds ${Date.parse('2026-11-26T00:00:00Z') / 1000}`);
  });

  it('counts archive failures as they grow, re-baselining after a stats reset', async () => {
    let failed = 0;
    const { inv, metrics } = inventory(undefined, { archiver: async () => ({ ...archiver, checkedAt: new Date(), failedCount: failed }) });
    const total = async () =>
      (await metrics.walArchiveFailures.get()).values.find((v) => v.labels.reason === 'archive_command_failed')?.value ?? 0;
    await inv.archiver();
    failed = 3;
    await inv.archiver();
    expect(await total()).toBe(3);
    failed = 0; // pg_stat_reset_shared('archiver'), or a failover to a server with its own counts
    await inv.archiver();
    failed = 2;
    await inv.archiver();
    expect(await total()).toBe(5);
  });

  it('the recoverable range runs from the end of the oldest good backup to now less the RPO exposure', async () => {
    const tool: BackupTool = {
      info: async () =>
        info([
          ['2026-11-25T00:00:00.000Z', 'full', true],
          ['2026-11-25T06:00:00.000Z', 'full', false],
        ]),
      backup: async () => undefined,
      restore: async () => undefined,
    };
    const { inv } = inventory(tool);
    const range = await inv.recoverableRange();
    expect(range.from).toBe('2026-11-25T06:00:01.000Z'); // pgBackRest's whole seconds, rounded up
    expect(Math.abs(Date.parse(range.to!) - Date.now())).toBeLessThan(2000);
  });

  it('on a standby (read-only failover) the exposure is unknown: null, and the gauge keeps its last value', async () => {
    let standby = false;
    let xid = 1;
    const { inv, metrics } = inventory(undefined, {
      archiver: async () =>
        standby
          ? { ...archiver, checkedAt: new Date(), inRecovery: true, currentLsn: null, nextXid: null }
          : { ...archiver, checkedAt: new Date(), currentLsn: '0/3001000', nextXid: String((xid += 1)) },
    });
    await inv.archiver();
    await new Promise((r) => setTimeout(r, 30));
    const exposed = await inv.archiver();
    expect(exposed.rpoExposureSeconds).toBeGreaterThan(0);
    standby = true;
    expect((await inv.archiver()).rpoExposureSeconds).toBeNull();
    expect((await metrics.rpoExposure.get()).values[0]?.value).toBe(exposed.rpoExposureSeconds);
  });

  it("backupAge follows BackupTooOld's rule: the newest good full or differential backup against BACKUP_MAX_AGE (incremental and failed ones do not count)", () => {
    const now = Date.parse('2026-11-26T12:00:00Z');
    const backups = info([
      ['2026-11-24T12:00:00Z', 'full', false],
      ['2026-11-25T08:00:00Z', 'diff', true],
      ['2026-11-26T11:00:00Z', 'incr', false],
    ]).backups;
    expect(backupAge(backups, 26 * 3600, now)).toEqual({
      maxAgeSeconds: 93600,
      newestFullOrDiff: { label: '20261120-000000F', stoppedAt: '2026-11-24T12:00:00Z' },
      ageSeconds: 172800,
      tooOld: true,
      unrecoverable: [],
    });
    expect(backupAge(backups, 3 * 86400, now).tooOld).toBe(false);
    expect(backupAge([], 93600, now)).toEqual({
      maxAgeSeconds: 93600,
      newestFullOrDiff: null,
      ageSeconds: null,
      tooOld: true,
      unrecoverable: [],
    });
  });

  it('PostgreSQL reporting segments archived that the repository lacks: failing, counted, and the RPO counts from them', async () => {
    // archive_command = '/bin/true': pg_stat_archiver says …0D was archived a minute ago; the repository ends at …0A.
    const tool: BackupTool = {
      info: async () => ({
        ...info([['2026-11-25T00:00:00.000Z', 'full', false]]),
        archive: { min: '000000010000000000000001', max: '00000001000000000000000A' },
        readAt: new Date().toISOString(),
      }),
      backup: async () => undefined,
      restore: async () => undefined,
    };
    const { inv, metrics } = inventory(tool, {
      archiver: async () => ({
        ...archiver,
        checkedAt: new Date(),
        currentLsn: '0/E000100',
        lastArchivedWal: '00000001000000000000000D',
        lastArchivedAt: new Date(Date.now() - 60_000),
      }),
    });
    const listed = await inv.inventory();
    expect(listed.archiving).toMatchObject({
      available: true,
      failing: true,
      failure: { code: 'archive_missing_in_repository' },
      repositoryArchivedWal: '00000001000000000000000A',
    });
    const exposure = (listed.archiving as { rpoExposureSeconds: number }).rpoExposureSeconds;
    expect(exposure).toBeGreaterThanOrEqual(59);
    const text = await metrics.registry.metrics();
    expect(text).toContain('sav3_wal_archive_failures_total{reason="archive_missing_in_repository"} 3');
    expect(text).toContain('sav3_wal_archiving_failing{reason="archive_missing_in_repository"} 1');
    expect(text).toMatch(/sav3_rpo_exposure_seconds\{component="database"\} (59|6\d)/);
  });

  it('segments waiting to be archived beyond the stall bound (archive_command empty): failing archive_not_progressing', async () => {
    const { inv, metrics } = inventory(undefined, {
      archiveStallMs: 1000,
      archiver: async () => ({
        ...archiver,
        checkedAt: new Date(),
        ready: { count: 2, oldestWal: '000000010000000000000003', oldestAt: new Date(Date.now() - 120_000) },
      }),
    });
    const read = await inv.archiver();
    expect(read.assessment).toMatchObject({ failing: true, failure: { code: 'archive_not_progressing' } });
    expect(read.rpoExposureSeconds).toBeGreaterThanOrEqual(119);
    const text = await metrics.registry.metrics();
    expect(text).toContain('sav3_wal_archive_failures_total{reason="archive_not_progressing"} 2');
    expect(text).toContain('sav3_wal_archiving_failing{reason="archive_not_progressing"} 1');
    expect(text).toContain('sav3_wal_archiving_failing{reason="archive_missing_in_repository"} 0');
  });
});
