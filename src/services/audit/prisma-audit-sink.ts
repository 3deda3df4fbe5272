import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { AuditEvent, AuditSink } from './audit-event.ts';
import { mapStrings } from '../../lib/map-strings.ts';

const json = (v: unknown) => (v === undefined || v === null ? undefined : (v as object));

/**
 * PostgreSQL cannot store the NUL character in text or jsonb: one such event would fail its whole
 * batch on every flush and hold back every event spooled after it. Inputs refuse NUL (jsonBody);
 * anything else that carries one (an error message, say, or an object key) is written with U+FFFD
 * in its place.
 */
function withoutNul(event: AuditEvent): AuditEvent {
  return mapStrings(event, (s) => s.replaceAll('\u0000', '\uFFFD'), { keys: true }) as AuditEvent;
}

export class PrismaAuditSink implements AuditSink {
  constructor(private readonly prisma: () => PrismaClient) {}

  async write(events: AuditEvent[]): Promise<void> {
    await this.prisma().auditEvent.createMany({
      data: events.map((e) => {
        const clean = withoutNul(e);
        return { ...clean, at: new Date(e.at), before: json(clean.before), after: json(clean.after), detail: json(clean.detail) };
      }),
      skipDuplicates: true,
    });
  }

  async recent(limit: number): Promise<AuditEvent[]> {
    const rows = await this.prisma().auditEvent.findMany({ orderBy: [{ at: 'desc' }, { id: 'desc' }], take: limit });
    return rows.map((r) => ({ ...r, at: r.at.toISOString(), result: r.result as AuditEvent['result'] }));
  }
}
