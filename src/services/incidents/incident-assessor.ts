import type { Severity } from './incident-model.ts';
import type { LiveFacts } from './live-state.ts';

export interface RuleResult {
  rule: string;
  severity: Severity;
  matched: boolean;
  evidence: string;
}

export interface Assessment {
  severity: Severity | null;
  rule: string | null;
  reason: string;
  rules: RuleResult[];
  assessedAt: string;
}

/**
 * Proposes a severity from the live state: the first (most severe) rule that matches wins, and
 * every rule is reported with its evidence (statuses and error codes; never host names).
 */
export function assess(f: LiveFacts, now = new Date()): Assessment {
  const { database, media, redis } = f.health.components;
  const replication = database.replication as { status?: string; state?: string; lagSeconds?: number | null } | undefined;
  const code = (p: { error?: { code: string } }) => p.error?.code ?? 'none';
  const unwritable = database.status !== 'unhealthy' && database.inRecovery === true;
  const backupStale =
    f.backupAgeSeconds !== undefined &&
    f.backupMaxAgeSeconds !== undefined &&
    (f.backupAgeSeconds === null || f.backupAgeSeconds > f.backupMaxAgeSeconds);
  // A configured replica that is unreachable or not streaming leaves no failover target.
  const replicaMissing =
    f.replicaConfigured &&
    (replication?.state === 'unreachable' || replication?.state === 'disconnected' || replication?.state === 'diverged');
  const rules: RuleResult[] = [
    {
      rule: 'primary_database_down',
      severity: 'P0',
      matched: database.status === 'unhealthy',
      evidence: `database ${database.status} (error ${code(database)})`,
    },
    {
      rule: 'primary_database_unwritable',
      severity: 'P0',
      matched: unwritable,
      evidence: `active database in recovery: ${String(database.inRecovery ?? 'unknown')}`,
    },
    {
      rule: 'media_uploads_failing',
      severity: 'P1',
      matched: media.status === 'unhealthy' || f.health.readOnly,
      evidence: `media ${media.status} (error ${code(media)}), read-only mode ${f.health.readOnly ? 'on' : 'off'}`,
    },
    {
      rule: 'no_replica',
      severity: 'P1',
      matched: replicaMissing,
      evidence: f.replicaConfigured ? `replica ${replication?.state ?? 'unknown'}` : 'no replica configured (rule not applicable)',
    },
    {
      rule: 'replica_lagging',
      severity: 'P2',
      matched: replication?.status === 'degraded' && !replicaMissing,
      evidence: `replication ${replication?.state ?? 'n/a'}, lag ${replication?.lagSeconds ?? 'n/a'} s`,
    },
    {
      rule: 'backups_stale',
      severity: 'P2',
      matched: backupStale,
      evidence:
        f.backupAgeSeconds === undefined
          ? 'no backup age reported'
          : f.backupAgeSeconds === null
            ? `no successful backup yet (limit ${f.backupMaxAgeSeconds} s)`
            : `newest backup ${f.backupAgeSeconds} s old (limit ${f.backupMaxAgeSeconds} s)`,
    },
    {
      rule: 'warnings_only',
      severity: 'P3',
      matched: f.health.status !== 'healthy' || redis.status !== 'healthy',
      evidence: `health ${f.health.status}, redis ${redis.status}`,
    },
  ];
  const first = rules.find((r) => r.matched);
  return {
    severity: first?.severity ?? null,
    rule: first?.rule ?? null,
    reason: first ? `${first.rule}: ${first.evidence}` : 'every check passes; no incident proposed',
    rules,
    assessedAt: now.toISOString(),
  };
}
