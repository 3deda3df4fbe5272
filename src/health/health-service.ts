import type { DatabaseProbeData, DatabaseTarget, MediaBackendName } from '../domain.ts';
import type { Lifecycle } from '../lifecycle/lifecycle.ts';
import type { ProbeError } from './probe-error.ts';
import type { ProbeResult, ProbeRunner } from './probe-runner.ts';

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface ComponentReport {
  status: HealthStatus;
  latencyMs: number | null;
  checkedAt: string | null;
  error?: {
    code: ProbeError['code'] | 'split_brain' | 'not_writable' | 'state_unknown' | 'state_mismatch' | (string & {});
    message?: string;
  };
  [extra: string]: unknown;
}

export interface HealthServiceDeps {
  database: {
    runners: ReadonlyMap<DatabaseTarget, ProbeRunner<DatabaseProbeData>>;
    active: () => DatabaseTarget;
    /** Where reads go (the active target, or a node on a newer timeline, or the one that answers). */
    readTarget?: () => DatabaseTarget;
  };
  /** Whether this instance knows the shared DR state (false: fail-safe, writes refused `state_unknown`). */
  stateKnown?: () => boolean;
  media: {
    runners: ReadonlyMap<MediaBackendName, ProbeRunner<void>>;
    active: () => MediaBackendName;
    bucket: (b: MediaBackendName) => string;
    /** Media pools at their bound (e.g. "primary.download", "spool"): reported as degraded. */
    saturated?: () => string[];
    /** The continuous backup's outbox as last read: stuck or retired rows are reported as degraded. */
    backup?: () => { backlog: number; stuck: number; retired: number; oldestAgeSeconds: number } | undefined;
  };
  redis: ProbeRunner<void>;
  /** Extra replication facts for /health/database (from the failover capability). */
  replication?: () => Promise<Record<string, unknown> | undefined>;
  drSummary: () => {
    readOnly: boolean;
    stateVersion: number;
    ttlExpiryRefused?: { reason: string; kind: string; expiresAt: string; at: string } | null;
  };
  /**
   * Whether the active target may take writes (null: yes, or unknown) and the nodes' picture
   * (split brain, writable nodes), from the database capability and the DR state.
   */
  writes?: () => { refusal: { code: string; message: string } | null; splitBrain: boolean; writableNodes: string[]; fenced: string[] };
  lifecycle: Lifecycle;
  intervalMs: number;
  timeoutMs: number;
}

/**
 * Serves health from probe results refreshed in the background; a result older than one interval
 * plus one timeout is refreshed on demand (shared by concurrent callers), so every answer comes
 * within the probe timeout.
 */
export class HealthService {
  private timer?: NodeJS.Timeout;

  constructor(private readonly deps: HealthServiceDeps) {}

  start(): void {
    if (this.timer) return;
    this.refreshAll();
    this.timer = setInterval(() => this.refreshAll(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Probes every configured target, not only the active ones, so a failover target is known good. */
  refreshAll(): void {
    for (const runner of this.runners()) void runner.run();
  }

  private runners(): ProbeRunner<unknown>[] {
    return [...this.deps.database.runners.values(), ...this.deps.media.runners.values(), this.deps.redis] as ProbeRunner<unknown>[];
  }

  /** Forgets every cached result, so the next request probes afresh. */
  invalidate(): void {
    for (const runner of this.runners()) runner.invalidate();
  }

  private get maxAgeMs(): number {
    return this.deps.intervalMs + this.deps.timeoutMs;
  }

  async database(reveal: boolean): Promise<ComponentReport> {
    const target = this.deps.database.active();
    // Every database target is (re)probed together: the replication facts need both ends.
    const results = new Map(
      await Promise.all([...this.deps.database.runners].map(async ([t, r]) => [t, await r.get(this.maxAgeMs)] as const)),
    );
    const result = results.get(target);
    const report = toReport(result, reveal);
    report.target = target;
    report.inRecovery = result?.data?.inRecovery ?? null;
    const replication = await this.deps.replication?.();
    if (replication) {
      report.replication = replication;
      if (report.status === 'healthy' && replication.status === 'degraded') report.status = 'degraded';
    }
    this.addWriteFacts(report, reveal);
    return report;
  }

  /**
   * Health says whether writes can work: unhealthy with `not_writable` (or `state_unknown`,
   * `state_mismatch`) when the active target cannot take them and read-only mode is off, and
   * `split_brain` while more than one node takes writes.
   */
  private addWriteFacts(report: ComponentReport, reveal: boolean): void {
    const writes = this.deps.writes?.();
    if (!writes) return;
    report.writableNodes = writes.writableNodes;
    if (writes.fenced.length > 0) report.fencedNodes = writes.fenced;
    if (writes.splitBrain) {
      report.status = 'unhealthy';
      report.error = {
        code: 'split_brain',
        ...(reveal ? { message: `more than one node takes writes: ${writes.writableNodes.join(', ')}` } : {}),
      };
      return;
    }
    if (report.status === 'unhealthy') return;
    const { readOnly } = this.deps.drSummary();
    // A state not known is unhealthy even if the copy this instance holds says read-only: that copy may be outdated.
    const unknown = writes.refusal?.code === 'state_unknown';
    if (writes.refusal && writes.refusal.code !== 'read_only' && (!readOnly || unknown)) {
      report.status = 'unhealthy';
      report.writable = false;
      report.error = { code: writes.refusal.code, message: writes.refusal.message };
    } else {
      report.writable = !readOnly && !writes.refusal;
      // Read-only on hides it from writes, but with no node taking writes the mode cannot be lifted.
      // Also when it is degraded for another reason already (replication disconnected, which a
      // primary's restart makes for a while): the code says why the mode cannot be lifted.
      if (readOnly && writes.writableNodes.length === 0 && !report.error) {
        report.status = 'degraded';
        report.error = {
          code: 'no_writable_node',
          ...(reveal ? { message: 'read-only mode is on and no configured database node takes writes: it cannot be lifted' } : {}),
        };
      }
    }
  }

  async media(reveal: boolean): Promise<ComponentReport> {
    const backend = this.deps.media.active();
    const runner = this.deps.media.runners.get(backend);
    const report = toReport(runner ? await runner.get(this.maxAgeMs) : undefined, reveal);
    report.backend = backend;
    report.bucket = this.deps.media.bucket(backend);
    const saturated = this.deps.media.saturated?.() ?? [];
    if (saturated.length > 0) {
      report.saturated = saturated;
      if (report.status === 'healthy') report.status = 'degraded';
    }
    const backup = this.deps.media.backup?.();
    if (backup) {
      report.backup = backup;
      if ((backup.stuck > 0 || backup.retired > 0) && report.status === 'healthy') report.status = 'degraded';
    }
    return report;
  }

  async redis(reveal: boolean): Promise<ComponentReport> {
    return toReport(await this.deps.redis.get(this.maxAgeMs), reveal);
  }

  /**
   * Ready while this instance can serve: the active target answers, or read-only mode is on and the
   * node reads go to answers (never a former primary behind the newest timeline). A shared primary outage with read-only mode on therefore keeps
   * every instance in the load balancer, serving reads.
   */
  async ready(): Promise<{ status: HealthStatus; checks: Record<string, HealthStatus> }> {
    const results = new Map(
      await Promise.all([...this.deps.database.runners].map(async ([t, r]) => [t, await r.get(this.maxAgeMs)] as const)),
    );
    const active = this.deps.database.active();
    const reads = this.deps.database.readTarget?.() ?? active;
    const activeUp = results.get(active)?.ok === true;
    // The node reads would go to: never a former primary behind the newest timeline (readTarget).
    const anyUp = this.deps.database.readTarget ? results.get(reads)?.ok === true : [...results.values()].some((r) => r.ok);
    // Reads served from another node than the active one (it answers and the active one does not,
    // or it is on a newer timeline: the active one would serve stale data) are degraded. Whether
    // the instance can serve is as the contract says: the active target answers, or read-only
    // mode is on and any target answers.
    const readsElsewhere = reads !== active && results.get(reads)?.ok === true;
    const canServe = activeUp || (this.deps.drSummary().readOnly && anyUp);
    const accepting = !this.deps.lifecycle.shuttingDown;
    const checks: Record<string, HealthStatus> = {
      database: canServe ? (activeUp && !readsElsewhere ? 'healthy' : 'degraded') : 'unhealthy',
      process: accepting ? 'healthy' : 'unhealthy',
    };
    // Reads still work without the shared state, but nothing about writes is known: say so.
    if (this.deps.stateKnown && !this.deps.stateKnown()) checks.drState = 'degraded';
    const ok = Object.values(checks).every((s) => s !== 'unhealthy');
    return { status: ok ? 'healthy' : 'unhealthy', checks };
  }

  async overall(reveal: boolean) {
    const [database, media, redis] = await Promise.all([this.database(reveal), this.media(reveal), this.redis(reveal)]);
    // Only the database is critical: without media or Redis the API still serves, degraded.
    const degradedComponents = [database, media, redis].some((c) => c.status !== 'healthy');
    const { readOnly, stateVersion, ttlExpiryRefused } = this.deps.drSummary();
    // A read-only TTL that passed without taking effect is worth a look: degraded, and says why.
    const status: HealthStatus =
      database.status === 'unhealthy' ? 'unhealthy' : degradedComponents || ttlExpiryRefused ? 'degraded' : 'healthy';
    return {
      status,
      components: { database, media, redis },
      readOnly,
      stateVersion,
      ...(ttlExpiryRefused
        ? {
            readOnlyTtlExpiryRefused: {
              kind: ttlExpiryRefused.kind,
              expiresAt: ttlExpiryRefused.expiresAt,
              at: ttlExpiryRefused.at,
              ...(reveal ? { reason: ttlExpiryRefused.reason } : {}),
            },
          }
        : {}),
    };
  }
}

function toReport(result: ProbeResult<unknown> | undefined, reveal: boolean): ComponentReport {
  if (!result)
    return {
      status: 'unhealthy',
      latencyMs: null,
      checkedAt: null,
      error: { code: 'unknown', ...(reveal ? { message: 'not configured' } : {}) },
    };
  const report: ComponentReport = {
    status: result.ok ? 'healthy' : 'unhealthy',
    latencyMs: result.latencyMs,
    checkedAt: result.checkedAt.toISOString(),
  };
  if (result.error) report.error = { code: result.error.code, ...(reveal ? { message: result.error.message } : {}) };
  return report;
}
