import pg from 'pg';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { ValidationReport, ValidationReportStore } from './backup-validator.ts';

/** Validation reports in PostgreSQL (the `backup_validations` table). */
export class PrismaValidationStore implements ValidationReportStore {
  constructor(private readonly prisma: () => PrismaClient) {}

  async save(report: ValidationReport, meta: { jobId: string; instanceId: string }): Promise<void> {
    await this.prisma().backupValidation.create({
      data: {
        id: report.id,
        jobId: meta.jobId,
        status: report.status,
        backupLabel: report.backup?.label ?? null,
        targetTime: report.target.value ? new Date(report.target.value) : null,
        startedAt: new Date(report.startedAt),
        finishedAt: new Date(report.finishedAt),
        restoreMs: report.timings.restoreMs,
        recoveryMs: report.timings.recoveryMs,
        totalMs: report.timings.totalMs,
        restoredBytes: report.bytes === null ? null : BigInt(report.bytes),
        report: report as unknown as object,
        instanceId: meta.instanceId,
      },
    });
  }

  async recent(limit: number): Promise<(ValidationReport & { jobId: string; instanceId: string })[]> {
    const rows = await this.prisma().backupValidation.findMany({ orderBy: [{ finishedAt: 'desc' }, { id: 'desc' }], take: limit });
    return rows.map((r) => ({ ...(r.report as unknown as ValidationReport), jobId: r.jobId, instanceId: r.instanceId }));
  }
}

/**
 * The newest passing validation's finish time, on a short connection of its own: the metrics
 * sampler runs on every API instance and must not load or occupy the request pool's Prisma client.
 */
export async function lastPassedValidation(connectionString: string, timeoutMs: number): Promise<Date | undefined> {
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'sav3-backup-status',
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ at: Date | null }>(
      "SELECT max(finished_at) AS at FROM backup_validations WHERE status = 'passed'",
    );
    return rows[0]?.at ?? undefined;
  } finally {
    await client.end().catch(() => undefined);
  }
}
