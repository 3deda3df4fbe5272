import type { PrismaClient } from '../generated/prisma/client.ts';
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

  async lastSuccess(): Promise<Date | undefined> {
    const row = await this.prisma().backupValidation.findFirst({ where: { status: 'passed' }, orderBy: { finishedAt: 'desc' } });
    return row?.finishedAt;
  }
}
