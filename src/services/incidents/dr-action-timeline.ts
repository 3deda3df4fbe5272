import type { AuditEvent } from '../audit/audit-event.ts';
import type { EventHub } from './event-hub.ts';
import type { IncidentStore } from './incident-store.ts';

/** Audit actions that are the incident's own (already on its timeline) and never join it again. */
const OWN_ACTION = /^incident\./;

/** A multi-step action reported step by step (the restore tool) names the step. */
export function stepOf(detail: unknown): string {
  const step = (detail as { step?: unknown } | null)?.step;
  return typeof step === 'string' ? ` (${step})` : '';
}

/**
 * The audit hook behind "timeline for free": every DR action recorded while incidents were open
 * joins their timelines, once (keyed by the audit event), with its measured duration. It throws
 * when PostgreSQL is down, so the audit log keeps the event spooled and this runs again when the
 * event is written.
 */
export function drActionTimeline(store: IncidentStore, hub: EventHub) {
  return async (events: AuditEvent[]): Promise<void> => {
    for (const event of events) {
      // A viewer's refused attempt is noise, not part of the response.
      const forbidden = (event.detail as { code?: string } | null)?.code === 'forbidden';
      if (OWN_ACTION.test(event.action) || forbidden) continue;
      const at = new Date(event.at);
      const started = new Date(at.getTime() - (event.durationMs ?? 0));
      for (const incident of await store.openAt(at)) {
        const added = await store.addEntries(incident.id, [
          {
            at: started,
            kind: 'dr_action',
            visibility: 'internal',
            message: `${event.action}${stepOf(event.detail)} ${event.result} by ${event.actor}`,
            author: event.actor,
            detail: {
              action: event.action,
              result: event.result,
              auditId: event.id,
              before: event.before,
              after: event.after,
              detail: event.detail,
            },
            durationMs: event.durationMs ?? null,
            dedupeKey: `audit:${event.id}:${incident.id}`,
          },
        ]);
        if (added > 0)
          hub.publish(
            'incident.timeline',
            { action: event.action, result: event.result, durationMs: event.durationMs ?? null },
            incident.id,
          );
      }
    }
  };
}
