// The post-mortem draft: everything the record already knows, and headings for what only people can write.
import { stepOf } from './dr-action-timeline.ts';
import {
  COMPONENT_NAMES,
  formatDuration,
  RECOVERY_TARGETS,
  RESPONSE_TARGET_SECONDS,
  ROLE_TITLES,
  ROLES,
  type Incident,
  type TimelineEntry,
} from './incident-model.ts';
import { mdBlock, mdInline } from './incident-text.ts';

const DATABASE_ACTIONS = /^(database\.|read_only\.|restore|backup)/;
const MEDIA_ACTIONS = /^media\./;

function span(fromIso: string | null, toIso: string | null): number | null {
  if (!fromIso || !toIso) return null;
  return Date.parse(toIso) - Date.parse(fromIso);
}

function show(ms: number | null, target?: number): string {
  if (ms === null) return 'not reached';
  if (target === undefined) return formatDuration(ms);
  return `${formatDuration(ms)} (target ${formatDuration(target * 1000)}: ${ms <= target * 1000 ? 'met' : 'missed'})`;
}

/** Every text from the record goes through these: redacted, one line, no raw HTML, no forged structure. */
const cell = mdInline;

interface DataLoss {
  bytes?: number | null;
  primaryLastSeenAt?: string | null;
}

/** RPO reached by a promotion: none when the replica had replayed everything; else the time since the primary was last seen. */
function promotionRpo(actions: TimelineEntry[]): { seconds: number | null; text: string } | undefined {
  const promote = actions.find(
    (a) => (a.detail as { action?: string })?.action === 'database.promote' && (a.detail as { result?: string })?.result === 'success',
  );
  if (!promote) return undefined;
  const window = ((promote.detail as { detail?: { dataLossWindow?: DataLoss } })?.detail?.dataLossWindow ?? {}) as DataLoss;
  if (window.bytes === 0)
    return { seconds: 0, text: 'none: the replica had replayed everything the primary was last seen to have written' };
  if (window.bytes && window.primaryLastSeenAt) {
    const seconds = Math.max(0, Math.round((Date.parse(promote.at) - Date.parse(window.primaryLastSeenAt)) / 1000));
    return { seconds, text: `up to ${window.bytes} bytes of WAL, written at most ${formatDuration(seconds * 1000)} before the promotion` };
  }
  return { seconds: null, text: 'unknown (the old primary was never seen)' };
}

export function renderPostmortem(incident: Incident, timeline: TimelineEntry[]): string {
  const actions = timeline.filter((e) => e.kind === 'dr_action');
  const detect = span(incident.startedAt, incident.detectedAt);
  const ack = span(incident.detectedAt, incident.acknowledgedAt);
  const mitigate = span(incident.startedAt, incident.mitigatedAt);
  const resolve = span(incident.startedAt, incident.resolvedAt);
  const lines: string[] = [];
  lines.push(`# Post-mortem: ${incident.id} — ${mdInline(incident.title)}`, '');
  lines.push(`- **Severity:** ${incident.severity}`);
  lines.push(`- **Status:** ${incident.status}`);
  lines.push(`- **Components:** ${incident.components.map((c) => COMPONENT_NAMES[c]).join(', ') || 'none named'}`);
  lines.push(`- **Opened by:** ${mdInline(incident.createdBy)} (${incident.source})`);
  for (const role of ROLES) lines.push(`- **${ROLE_TITLES[role]}:** ${mdInline(incident.roles[role] ?? 'unassigned')}`);
  lines.push('', '## Summary', '', mdBlock(incident.summary), '');
  lines.push('## Key times (UTC)', '');
  lines.push(`| event | time |`, `| --- | --- |`);
  lines.push(
    `| started | ${incident.startedAt} |`,
    `| detected | ${incident.detectedAt} |`,
    `| acknowledged | ${incident.acknowledgedAt ?? '—'} |`,
    `| mitigated | ${incident.mitigatedAt ?? '—'} |`,
    `| resolved | ${incident.resolvedAt ?? '—'} |`,
    '',
  );
  lines.push(`- **Time to detect:** ${show(detect)}`);
  lines.push(`- **Time to acknowledge:** ${show(ack, RESPONSE_TARGET_SECONDS[incident.severity])}`);
  lines.push(`- **Time to mitigate:** ${show(mitigate)}`);
  lines.push(`- **Time to resolve:** ${show(resolve)}`, '');

  lines.push('## Recovery objectives', '');
  const families: ('database' | 'media')[] = [];
  if (
    incident.components.includes('database') ||
    actions.some((a) => DATABASE_ACTIONS.test(String((a.detail as { action?: string })?.action)))
  )
    families.push('database');
  if (
    incident.components.some((c) => c.startsWith('media')) ||
    actions.some((a) => MEDIA_ACTIONS.test(String((a.detail as { action?: string })?.action)))
  )
    families.push('media');
  if (families.length === 0) lines.push('No database or media recovery was part of this incident.');
  const rto = mitigate ?? resolve;
  for (const family of families) {
    const target = RECOVERY_TARGETS[family];
    lines.push(`- **${family === 'database' ? 'Database' : 'Media storage'} RTO:** ${show(rto, target.rtoSeconds)}`);
    if (family === 'database') {
      const rpo = promotionRpo(actions);
      if (!rpo)
        lines.push(
          `- **Database RPO:** no promotion: no committed data was at risk from failover (target ${formatDuration(target.rpoSeconds * 1000)})`,
        );
      else
        lines.push(
          `- **Database RPO:** ${rpo.text}${rpo.seconds === null ? '' : ` (target ${formatDuration(target.rpoSeconds * 1000)}: ${rpo.seconds <= target.rpoSeconds ? 'met' : 'missed'})`}`,
        );
    } else {
      lines.push(
        `- **Media RPO:** objects not yet copied to the backup at the switch; see the media sync results below (target ${formatDuration(target.rpoSeconds * 1000)})`,
      );
    }
  }
  lines.push('');

  lines.push('## DR actions', '');
  if (actions.length === 0) lines.push('No DR actions were taken while the incident was open.');
  else {
    lines.push('| started (UTC) | action | result | by | duration |', '| --- | --- | --- | --- | --- |');
    for (const a of actions) {
      const d = a.detail as { action?: string; result?: string; detail?: unknown };
      lines.push(
        `| ${a.at} | ${cell(d.action ? `${d.action}${stepOf(d.detail)}` : a.message)} | ${cell(d.result ?? '')} | ${cell(a.author)} | ${a.durationMs === null ? '—' : formatDuration(a.durationMs).replace(/^0 s$/, `${a.durationMs} ms`)} |`,
      );
    }
  }
  lines.push('');

  lines.push('## Timeline (UTC)', '', '| time | visibility | entry | by |', '| --- | --- | --- | --- |');
  for (const e of timeline) {
    lines.push(
      `| ${e.at} | ${e.visibility} | ${cell(`${e.kind}${e.status && e.kind === 'status' ? ` → ${e.status}` : ''}: ${e.message}`)}${e.durationMs !== null ? ` (${e.durationMs} ms)` : ''} | ${cell(e.author)} |`,
    );
  }
  lines.push('');
  lines.push('## Root cause', '', incident.rootCause === null ? '_To be written._' : mdBlock(incident.rootCause), '');
  lines.push('## What went well', '', '_To be written._', '');
  lines.push('## What went wrong', '', '_To be written._', '');
  lines.push('## Follow-ups', '', '- [ ] _Action, owner, due date_', '');
  return lines.join('\n');
}
