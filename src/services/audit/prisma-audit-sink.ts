import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { AuditEvent, AuditSink } from './audit-event.ts';

const json = (v: unknown) => (v === undefined || v === null ? undefined : (withoutNul(v) as object));

/**
 * PostgreSQL cannot store the NUL character in text or jsonb: one such event would fail its whole
 * batch on every flush and hold back every event spooled after it. Inputs refuse NUL (jsonBody);
 * anything else that carries one (an error message, say) is written with U+FFFD in its place.
 */
function withoutNul(v: unknown): unknown {
  if (typeof v === 'string') return v.includes('\u0000') ? v.replaceAll('\u0000', '\uFFFD') : v;
  if (Array.isArray(v)) return v.map(withoutNul);
  if (v !== null && typeof v === 'object' && !(v instanceof Date))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [withoutNul(k) as string, withoutNul(x)]));
  return v;
}

export class PrismaAuditSink implements AuditSink {
  constructor(private readonly prisma: () => PrismaClient) {}

  async write(events: AuditEvent[]): Promise<void> {
    await this.prisma().auditEvent.createMany({
      data: events.map((e) => ({
        ...(withoutNul(e) as AuditEvent),
        at: new Date(e.at),
        before: json(e.before),
        after: json(e.after),
        detail: json(e.detail),
      })),
      skipDuplicates: true,
    });
  }

  async recent(limit: number): Promise<AuditEvent[]> {
    const rows = await this.prisma().auditEvent.findMany({ orderBy: [{ at: 'desc' }, { id: 'desc' }], take: limit });
    return rows.map((r) => ({ ...r, at: r.at.toISOString(), result: r.result as AuditEvent['result'] }));
  }
}
