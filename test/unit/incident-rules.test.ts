import { assess } from '../../src/services/incidents/incident-assessor.ts';
import { canTransition, responseFacts, severityFromLabel, STATUSES, type Incident } from '../../src/services/incidents/incident-model.ts';
import { Gauge, Registry } from 'prom-client';
import { backupAgeSeconds, componentStates, type LiveFacts } from '../../src/services/incidents/live-state.ts';
import { renderInitial, renderResolution, renderUpdate } from '../../src/services/incidents/notification-templates.ts';
import { renderPostmortem } from '../../src/services/incidents/postmortem.ts';
import { scrubPublic } from '../../src/services/incidents/status-service.ts';

const ok = { status: 'healthy' as const };
function facts(
  over: Partial<{ database: object; media: object; redis: object; readOnly: boolean; status: string }> = {},
  extra: Partial<LiveFacts> = {},
): LiveFacts {
  return {
    health: {
      status: (over.status ?? 'healthy') as LiveFacts['health']['status'],
      components: {
        database: { ...ok, inRecovery: false, ...over.database } as never,
        media: { ...ok, ...over.media } as never,
        redis: { ...ok, ...over.redis } as never,
      },
      readOnly: over.readOnly ?? false,
    },
    otherMediaUp: false,
    replicaConfigured: true,
    ...extra,
  };
}
const streaming = { replication: { status: 'healthy', state: 'streaming', lagSeconds: 0 } };

describe('classification rules', () => {
  it.each([
    ['nothing wrong', facts({ database: streaming }), null, null],
    [
      'primary down',
      facts({ database: { status: 'unhealthy', error: { code: 'timeout' } }, status: 'unhealthy' }),
      'P0',
      'primary_database_down',
    ],
    ['primary unwritable (in recovery)', facts({ database: { ...streaming, inRecovery: true } }), 'P0', 'primary_database_unwritable'],
    [
      'media down',
      facts({ database: streaming, media: { status: 'unhealthy', error: { code: 'connection_refused' } }, status: 'degraded' }),
      'P1',
      'media_uploads_failing',
    ],
    ['read-only mode refuses uploads', facts({ database: streaming, readOnly: true }), 'P1', 'media_uploads_failing'],
    [
      'replica unreachable',
      facts({ database: { replication: { status: 'degraded', state: 'unreachable', lagSeconds: null } }, status: 'degraded' }),
      'P1',
      'no_replica',
    ],
    [
      'replica disconnected',
      facts({ database: { replication: { status: 'degraded', state: 'disconnected', lagSeconds: 40 } }, status: 'degraded' }),
      'P1',
      'no_replica',
    ],
    [
      'replica lagging',
      facts({
        database: { status: 'degraded', replication: { status: 'degraded', state: 'catching_up', lagSeconds: 90 } },
        status: 'degraded',
      }),
      'P2',
      'replica_lagging',
    ],
    ['backups stale', facts({ database: streaming }, { backupAgeSeconds: 90_000, backupMaxAgeSeconds: 86_400 }), 'P2', 'backups_stale'],
    ['no backup ever', facts({ database: streaming }, { backupAgeSeconds: null, backupMaxAgeSeconds: 86_400 }), 'P2', 'backups_stale'],
    ['redis down only', facts({ database: streaming, redis: { status: 'unhealthy' }, status: 'degraded' }), 'P3', 'warnings_only'],
  ])('%s → %s (%s)', (_name, f, severity, rule) => {
    const a = assess(f);
    expect([a.severity, a.rule]).toEqual([severity, rule]);
    expect(a.rules).toHaveLength(7);
    if (rule) expect(a.reason.startsWith(`${rule}: `)).toBe(true);
  });

  it("reads the backup age from the backup capability's metric when it is exported", async () => {
    const registry = new Registry();
    expect(await backupAgeSeconds(registry)).toBeUndefined();
    const gauge = new Gauge({ name: 'sav3_backup_last_success_timestamp_seconds', help: 'h', labelNames: ['type'], registers: [registry] });
    expect(await backupAgeSeconds(registry)).toBeUndefined();
    gauge.set({ type: 'full' }, 0);
    expect(await backupAgeSeconds(registry)).toBeNull();
    const now = Date.parse('2026-01-02T00:00:00Z');
    gauge.set({ type: 'full' }, now / 1000 - 30 * 3600);
    gauge.set({ type: 'diff' }, now / 1000 - 2 * 3600);
    gauge.set({ type: 'incr' }, now / 1000 - 60);
    expect(await backupAgeSeconds(registry, now)).toBe(2 * 3600);
  });

  it('a replica that is not configured is no P1 by itself', () => {
    expect(assess(facts({}, { replicaConfigured: false })).severity).toBeNull();
  });

  it('the most severe matching rule wins over the others', () => {
    const a = assess(
      facts({ database: { status: 'unhealthy' }, media: { status: 'unhealthy' }, redis: { status: 'unhealthy' }, status: 'unhealthy' }),
    );
    expect(a.rule).toBe('primary_database_down');
    expect(a.rules.filter((r) => r.matched).map((r) => r.rule)).toEqual([
      'primary_database_down',
      'media_uploads_failing',
      'warnings_only',
    ]);
  });
});

describe('incident model', () => {
  it('allows forward and backward moves while open, none out of resolved, none to the same state', () => {
    for (const from of STATUSES)
      for (const to of STATUSES) {
        const expected = from !== 'resolved' && from !== to;
        expect([from, to, canTransition(from, to)]).toEqual([from, to, expected]);
      }
  });

  it('maps Alertmanager severity labels to runbook severities', () => {
    expect(['critical', 'page', 'P0', 'high', 'P1', 'warning', 'p2', 'info', undefined, 'weird'].map((l) => severityFromLabel(l))).toEqual([
      'P0',
      'P0',
      'P0',
      'P1',
      'P1',
      'P2',
      'P2',
      'P3',
      'P3',
      'P3',
    ]);
  });

  it('measures acknowledgement against the severity target', () => {
    const base = incident({ severity: 'P0', detectedAt: '2026-01-01T00:00:00.000Z', acknowledgedAt: null });
    const now = Date.parse('2026-01-01T00:20:00.000Z');
    expect(responseFacts(base, now)).toEqual({
      responseTargetSeconds: 900,
      acknowledgementSeconds: null,
      unacknowledgedSeconds: 1200,
      responseTargetMet: false,
    });
    expect(responseFacts({ ...base, acknowledgedAt: '2026-01-01T00:10:00.000Z' }, now)).toEqual({
      responseTargetSeconds: 900,
      acknowledgementSeconds: 600,
      unacknowledgedSeconds: null,
      responseTargetMet: true,
    });
  });
});

function incident(over: Partial<Incident> = {}): Incident {
  return {
    id: 'INC-20260101-1',
    severity: 'P0',
    title: 'Database Unavailable',
    summary: 'reports of database connectivity issues',
    components: ['database'],
    status: 'investigating',
    source: 'manual',
    createdBy: 'ops',
    roles: { incident_commander: 'alice' },
    rootCause: null,
    startedAt: '2026-01-01T00:00:00.000Z',
    detectedAt: '2026-01-01T00:02:00.000Z',
    acknowledgedAt: '2026-01-01T00:05:00.000Z',
    acknowledgedBy: 'ops',
    mitigatedAt: null,
    resolvedAt: null,
    nextUpdateDueAt: '2026-01-01T00:17:00.000Z',
    ...over,
  };
}

describe('notification templates and the post-mortem', () => {
  it('fills the runbook templates with the real values', () => {
    const initial = renderInitial(incident());
    expect(initial).toContain('ETA: Investigating (updates every 15 min 0 s)');
    expect(initial).toContain('Response Team: Incident Commander: alice');
    expect(initial).toContain('Next update: 2026-01-01T00:17:00.000Z');
    expect(renderUpdate(incident({ status: 'identified' }), 'Cause found', '20 min')).toMatch(
      /\[UPDATE\][\s\S]*Status: identified\nCause found[\s\S]*ETA: 20 min/,
    );
    const resolved = renderResolution(
      incident({ status: 'resolved', resolvedAt: '2026-01-01T01:02:03.000Z', rootCause: 'disk full' }),
      'Primary database restored from backup',
    );
    expect(resolved).toContain('Total Downtime: 1 h 2 min');
    expect(resolved).toContain('Root Cause: disk full');
  });

  it('reports detection, acknowledgement, mitigation and resolution times, and RTO/RPO against the targets', () => {
    const promoted = {
      id: 'x',
      at: '2026-01-01T00:08:00.000Z',
      kind: 'dr_action' as const,
      visibility: 'internal' as const,
      status: null,
      message: '',
      author: 'ops',
      durationMs: 1234,
      detail: {
        action: 'database.promote',
        result: 'success',
        detail: { dataLossWindow: { bytes: 4096, primaryLastSeenAt: '2026-01-01T00:07:30.000Z' } },
      },
    };
    const md = renderPostmortem(
      incident({ status: 'resolved', mitigatedAt: '2026-01-01T00:10:00.000Z', resolvedAt: '2026-01-01T00:40:00.000Z' }),
      [promoted],
    );
    expect(md).toContain('**Time to detect:** 2 min 0 s');
    expect(md).toContain('**Time to acknowledge:** 3 min 0 s (target 15 min 0 s: met)');
    expect(md).toContain('**Time to mitigate:** 10 min 0 s');
    expect(md).toContain('**Time to resolve:** 40 min 0 s');
    expect(md).toContain('**Database RTO:** 10 min 0 s (target 15 min 0 s: met)');
    expect(md).toContain('**Database RPO:** up to 4096 bytes of WAL, written at most 30 s before the promotion (target 5 min 0 s: met)');
    expect(md).toContain('| 2026-01-01T00:08:00.000Z | database.promote | success | ops | 1 s |');
  });
});

describe('status page safety', () => {
  it('scrubs URLs, host names, IPs and host:port pairs from public text', () => {
    expect(scrubPublic('db-1.prod.internal:5432 and https://minio.example.com/x?y and 10.0.0.7:9000 and redis:6379 down')).toBe(
      '[host] and [address] and [address] and [host] down',
    );
    expect(scrubPublic('Uploads fail for some users. We are on it, ETA 20 min.')).toBe(
      'Uploads fail for some users. We are on it, ETA 20 min.',
    );
  });

  it('derives component states from health: database down is an outage of the API (unless read-only) and uploads', () => {
    expect(componentStates(facts({ database: { status: 'unhealthy' } }))).toEqual({
      api: 'outage',
      database: 'outage',
      'media-uploads': 'outage',
      'media-downloads': 'degraded',
    });
    expect(componentStates(facts({ database: { status: 'unhealthy' }, readOnly: true })).api).toBe('degraded');
    expect(componentStates({ ...facts({ media: { status: 'unhealthy' } }), otherMediaUp: true })).toEqual({
      api: 'operational',
      database: 'operational',
      'media-uploads': 'outage',
      'media-downloads': 'degraded',
    });
  });
});
