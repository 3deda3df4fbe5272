import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import type { AuditLog } from '../audit/audit-log.ts';
import type { DrState, NodeIdentity } from '../dr-state/dr-state.ts';
import type { ProbeResult } from '../../health/probe-runner.ts';
import type { Logger } from '../../logger.ts';
import type { WriteRefusal } from '../write-gate/write-gate.ts';

export const FENCE_ACTOR = 'system:fence';
const TARGETS: DatabaseTarget[] = ['primary', 'replica'];

export interface NodeReport {
  /** More than one node of the cluster takes writes. */
  splitBrain: boolean;
  writableNodes: DatabaseTarget[];
  /** Targets whose system identifier differs from the one the DR state recorded. */
  mismatched: DatabaseTarget[];
  fenced: DatabaseTarget[];
  newestTimeline: number | null;
}

export interface NodeWatchDeps {
  latest: (target: DatabaseTarget) => ProbeResult<DatabaseProbeData> | undefined;
  state: () => DrState;
  fence: (target: DatabaseTarget) => Promise<{ terminated: number }>;
  onWritableNodes: (count: number) => void;
  audit: AuditLog;
  logger: Logger;
}

/**
 * One writable primary. Follows the probes of every configured node: counts the nodes that take
 * writes, remembers the newest timeline seen per cluster, says why the active target must not take
 * writes (a standby, a fenced node, an older timeline, not the node the DR state recorded), and
 * fences a node that takes writes on an older timeline than the newest (a returning old primary).
 */
export class NodeWatch {
  /** Per cluster, every timeline seen on a node out of recovery. */
  private readonly seen = new Map<string, Set<number>>();
  /** Per target, the identity and timeline of its last successful probe (it may be down now). */
  private readonly lastKnown = new Map<DatabaseTarget, { systemId: string; timeline: number }>();
  private readonly fencing = new Set<DatabaseTarget>();

  constructor(private readonly deps: NodeWatchDeps) {}

  /** The newest timeline known for a cluster: recorded in the DR state or seen by this instance. */
  newestTimeline(systemId: string | null): number | null {
    if (!systemId) return null;
    const recorded = this.recordedTimeline(systemId);
    const current = [...(this.seen.get(systemId) ?? [])].filter((t) => !this.abandoned(systemId, t));
    const seen = current.length > 0 ? Math.max(...current) : null;
    if (recorded === null) return seen;
    return seen === null ? recorded : Math.max(recorded, seen);
  }

  /** A timeline of a promotion a switchover abandoned (recorded in the DR state): never newest, never written to. */
  abandoned(systemId: string | null, timeline: number | null): boolean {
    if (!systemId || timeline === null) return false;
    return (this.deps.state().database.abandonedTimelines ?? []).some((a) => a.systemId === systemId && a.timeline === timeline);
  }

  private recordedTimeline(systemId: string): number | null {
    const db = this.deps.state().database;
    const sameCluster = Object.values(db.nodes ?? {}).some((n) => n?.systemId === systemId);
    return sameCluster && db.newestTimeline !== undefined ? db.newestTimeline : null;
  }

  identity(target: DatabaseTarget): NodeIdentity | null {
    const data = this.deps.latest(target)?.data;
    if (!data?.systemId || data.timeline === null) return null;
    return { systemId: data.systemId, timeline: data.timeline, recordedAt: new Date().toISOString() };
  }

  report(): NodeReport {
    const state = this.deps.state();
    const writableNodes: DatabaseTarget[] = [];
    const mismatched: DatabaseTarget[] = [];
    const fenced: DatabaseTarget[] = [];
    for (const target of TARGETS) {
      const result = this.deps.latest(target);
      if (!result?.ok || !result.data) continue;
      const { data } = result;
      if (!data.inRecovery && !data.fenced) writableNodes.push(target);
      if (data.fenced && !data.inRecovery) fenced.push(target);
      const recorded = state.database.nodes?.[target];
      if (recorded && data.systemId && recorded.systemId !== data.systemId) mismatched.push(target);
    }
    const activeId = this.deps.latest(state.database.active)?.data?.systemId ?? null;
    return { splitBrain: writableNodes.length > 1, writableNodes, mismatched, fenced, newestTimeline: this.newestTimeline(activeId) };
  }

  /** Why the active target must not take writes now, or null (unknown counts as writable: the commit fails by itself). */
  writeRefusal(): WriteRefusal | null {
    const state = this.deps.state();
    const report = this.report();
    if (report.mismatched.length > 0) {
      return {
        code: 'state_mismatch',
        message: `the DR state recorded other database nodes than the configured ${report.mismatched.join(', ')}; an operator must check and reset it`,
      };
    }
    const target = state.database.active;
    const result = this.deps.latest(target);
    // Once a promotion recorded a newest timeline, the active target must be known to be on it: a
    // node last seen down may come back as the old primary, and a write must not race its fencing.
    const recordedNewest = state.database.newestTimeline;
    if (recordedNewest !== undefined) {
      const seen = result?.ok && result.data?.timeline != null ? result.data.timeline : (state.database.nodes?.[target]?.timeline ?? null);
      if (seen === null || seen < recordedNewest) {
        return {
          code: 'not_writable',
          message: `the active database target (${target}) is not known to be on the newest timeline (${recordedNewest})`,
        };
      }
    }
    if (!result?.ok || !result.data) {
      // Not answering now. If it was last seen on a timeline older than the newest this instance
      // knows for its cluster, it is a former primary: when it comes back, a write must not race the
      // next probe and its fencing (the DR state may not record the promotion, e.g. Redis came back
      // empty or the state was reset). Otherwise unknown counts as writable: the commit fails by itself.
      const known = this.lastKnown.get(target);
      const newestKnown = known ? this.newestTimeline(known.systemId) : null;
      if (known && newestKnown !== null && known.timeline < newestKnown) {
        return {
          code: 'not_writable',
          message: `the active database target (${target}) was last seen on timeline ${known.timeline}, older than the newest (${newestKnown}): it is a former primary`,
        };
      }
      return null;
    }
    const { data } = result;
    if (data.inRecovery)
      return { code: 'not_writable', message: `the active database target (${target}) is a standby: it cannot take writes until promoted` };
    if (data.fenced)
      return {
        code: 'not_writable',
        message: `the active database target (${target}) is fenced read-only (default_transaction_read_only)`,
      };
    if (data.commitsHang)
      return {
        code: 'not_writable',
        message: `the active database target (${target}) makes every commit wait for a synchronous standby, and none is connected (synchronous_standby_names): a write would hang`,
      };
    if (this.abandoned(data.systemId, data.timeline)) {
      return {
        code: 'not_writable',
        message: `the active database target (${target}) is on timeline ${data.timeline}, a promotion a switchover abandoned`,
      };
    }
    const newest = this.newestTimeline(data.systemId);
    if (newest !== null && data.timeline !== null && data.timeline < newest) {
      return {
        code: 'not_writable',
        message: `the active database target (${target}) is on timeline ${data.timeline}, older than the newest (${newest}): it is a former primary`,
      };
    }
    return null;
  }

  /**
   * Null only when the active target's latest probe shows it takes writes (reachable, a primary,
   * not fenced, on the newest timeline); else why not. Stricter than writeRefusal, which lets an
   * unknown target through (its commit fails by itself): lifting read-only mode needs proof.
   */
  verifiedWritable(): string | null {
    const refusal = this.writeRefusal();
    if (refusal) return refusal.message;
    const target = this.deps.state().database.active;
    const result = this.deps.latest(target);
    if (!result) return `the active database target (${target}) has not been checked yet`;
    if (!result.ok || !result.data)
      return `the active database target (${target}) does not answer (${result.error?.code ?? 'unknown'}): it cannot be verified writable`;
    return null;
  }

  /** Called with every database probe result. */
  observe(): void {
    for (const target of TARGETS) {
      const result = this.deps.latest(target);
      const data = result?.data;
      if (result?.ok && data?.systemId && data.timeline !== null)
        this.lastKnown.set(target, { systemId: data.systemId, timeline: data.timeline });
      if (data?.systemId && data.timeline !== null && !data.inRecovery) {
        const seen = this.seen.get(data.systemId) ?? new Set<number>();
        seen.add(data.timeline);
        this.seen.set(data.systemId, seen);
      }
    }
    const report = this.report();
    this.deps.onWritableNodes(report.writableNodes.length);
    for (const target of report.writableNodes) {
      const data = this.deps.latest(target)!.data!;
      const newest = this.newestTimeline(data.systemId);
      if (newest !== null && data.timeline !== null && (data.timeline < newest || this.abandoned(data.systemId, data.timeline)))
        void this.fence(target, data, newest);
    }
  }

  private async fence(target: DatabaseTarget, data: DatabaseProbeData, newest: number): Promise<void> {
    if (this.fencing.has(target)) return;
    this.fencing.add(target);
    const detail = { target, systemId: data.systemId, timeline: data.timeline, newestTimeline: newest };
    try {
      const { terminated } = await this.deps.fence(target);
      this.deps.logger.error(
        { ...detail, terminated },
        'a former primary takes writes (split brain): fenced it read-only and ended its sessions',
      );
      await this.deps.audit.record({
        actor: FENCE_ACTOR,
        role: null,
        action: 'database.fence',
        result: 'success',
        before: null,
        after: null,
        detail: { ...detail, terminated },
        requestId: null,
      });
    } catch (err) {
      this.deps.logger.error(
        { ...detail, err: err instanceof Error ? err.message : String(err) },
        'a former primary takes writes (split brain) and could not be fenced',
      );
    } finally {
      this.fencing.delete(target);
    }
  }
}
