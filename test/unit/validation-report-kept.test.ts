import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupValidator, type ValidationReport } from '../../src/services/backup/backup-validator.ts';
import type { BackupTool } from '../../src/services/backup/pgbackrest.ts';
import { publicJobError } from '../../src/services/jobs/job-runner.ts';
import { captureLogger } from '../support/log-capture.ts';
import { oneFullBackup, validatorDeps } from '../support/fakes.ts';

const info = oneFullBackup;

/** What Prisma throws: the invocation, a source path and a code excerpt in the message. */
class PrismaClientKnownRequestError extends Error {
  code = 'P2003';
  constructor() {
    super(
      'Invalid `prisma.backupValidation.create()` invocation in\n/work/main/src/services/backup/validation-store.ts:10:42\n\n   7 |   async save(report) {\n→ 10 |     await this.prisma().backupValidation.create(\nForeign key constraint violated on the constraint: `backup_validations_job_fkey`',
    );
  }
}

describe('a validation whose report cannot be stored', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-validator-store-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('keeps the computed report (on the error, for the job result) and says so in clean words; the details go to the log', async () => {
    const tool: BackupTool = {
      info: async () => info,
      backup: async () => undefined,
      restore: async () => {
        throw new Error('pgBackRest failed: ERROR: [075]: no backup set found');
      },
    };
    const log = captureLogger('error');
    const validator = new BackupValidator(
      validatorDeps(root, {
        tool,
        info: async () => info,
        validationStore: {
          save: async () => {
            throw new PrismaClientKnownRequestError();
          },
        },
        logger: log.logger,
      }),
    );
    const err = (await validator
      .validate({ backup: 'latest' }, '0f0f0f0f-0000-4000-8000-000000000000')
      .catch((e: unknown) => e)) as Error & {
      report?: ValidationReport;
    };
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe(
      "the validation failed, but its report could not be stored (the database refused it: P2003); the report is in this job's result",
    );
    expect(err.report).toMatchObject({ status: 'failed', backup: { label: '20261126-080000F' } });
    expect(err.report!.checks.find((c) => c.name === 'restore')).toMatchObject({ ok: false });
    // What the job record gets (publicJobError of this error) is the same clean line.
    expect(publicJobError(err)).toBe(err.message);
    expect(log.text()).toContain('could not store a validation report');
  });

  it("a job's error never shows a driver's invocation, source paths or code excerpts", () => {
    const prisma = publicJobError(new PrismaClientKnownRequestError());
    expect(prisma).toBe("a database error (P2003); the worker's log has the details");
    const other = publicJobError(new Error('failed at /work/main/src/services/x.ts:12:3\n  at foo (/work/main/src/y.ts:1:1)'));
    expect(other).toBe('failed at <source>');
    expect(publicJobError('plain')).toBe('plain');
  });
});
