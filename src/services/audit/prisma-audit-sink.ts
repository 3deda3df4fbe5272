import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { AuditEvent, AuditSink } from './audit-event.ts';

const json = (v: unknown) => (v === undefined || v === null ? undefined : (v as object));

export class PrismaAuditSink implements AuditSink {
  constructor(private readonly prisma: () => PrismaClient) {}

  async write(events: AuditEvent[]): Promise<void> {
    await this.prisma().auditEvent.createMany({
      data: events.map((e) => ({ ...e, at: new Date(e.at), before: json(e.before), after: json(e.after), detail: json(e.detail) })),
      skipDuplicates: true,
    });
  }

  async recent(limit: number): Promise<AuditEvent[]> {
    const rows = await this.prisma().auditEvent.findMany({ orderBy: [{ at: 'desc' }, { id: 'desc' }], take: limit });
    return rows.map((r) => ({ ...r, at: r.at.toISOString(), result: r.result as AuditEvent['result'] }));
  }
}
