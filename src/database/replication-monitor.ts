import type { DatabaseProbeData } from './pg-probe.ts';
import { lsnGap } from './lsn.ts';
import type { ProbeResult } from '../health/probe-runner.ts';

export type ReplicationState = 'streaming' | 'catching_up' | 'disconnected' | 'promoted' | 'unreachable';

export interface ReplicationReport {
  status: 'healthy' | 'degraded';
  state: ReplicationState;
  lagSeconds: number | null;
  lagBytes: number | null;
  primaryLastKnownLsn: string | null;
  primaryLastSeenAt: string | null;
  replicaReplayLsn: string | null;
}

/**
 * Turns the latest primary and replica probes into replication facts. It remembers the primary's
 * last known WAL position, so after the primary dies the gap to the replica's replay position
 * still says how much acknowledged data the replica may lack: the data-loss window.
 */
export class ReplicationMonitor {
  private primaryLsn: string | null = null;
  private primarySeenAt: Date | null = null;

  constructor(private readonly maxLagSeconds: number) {}

  observePrimary(result: ProbeResult<DatabaseProbeData>): void {
    if (result.ok && result.data && !result.data.inRecovery && result.data.currentLsn) {
      this.primaryLsn = result.data.currentLsn;
      this.primarySeenAt = result.checkedAt;
    }
  }

  report(primary: ProbeResult<DatabaseProbeData> | undefined, replica: ProbeResult<DatabaseProbeData> | undefined, now = Date.now()): ReplicationReport {
    const base = { primaryLastKnownLsn: this.primaryLsn, primaryLastSeenAt: this.primarySeenAt?.toISOString() ?? null };
    if (!replica?.ok || !replica.data) {
      return { ...base, status: 'degraded', state: 'unreachable', lagSeconds: null, lagBytes: null, replicaReplayLsn: null };
    }
    const r = replica.data;
    if (!r.inRecovery) {
      return { ...base, status: 'healthy', state: 'promoted', lagSeconds: null, lagBytes: null, replicaReplayLsn: r.currentLsn };
    }
    const lagBytes = this.primaryLsn && r.replayLsn ? lsnGap(this.primaryLsn, r.replayLsn) : null;
    let lagSeconds: number | null;
    const standby = primary?.ok ? primary.data?.standbys.find((s) => s.replayLsn !== null) : undefined;
    if (lagBytes === 0) lagSeconds = 0;
    else if (standby) {
      // The primary's own measure. PostgreSQL sets replay_lag to NULL once an idle standby has
      // caught up: that is no lag, not an unknown one (WAL such as checkpoints advances without
      // commits, so the age of the last replayed commit would read as minutes of false lag).
      lagSeconds = standby.replayLagSeconds ?? 0;
    } else {
      // The primary is gone: how long since the replica last replayed a commit is all there is.
      lagSeconds = r.replayAt ? Math.max(0, (now - r.replayAt.getTime()) / 1000) : null;
    }
    if (lagSeconds !== null) lagSeconds = Math.round(lagSeconds * 1000) / 1000;
    const streaming = r.receiverStatus === 'streaming';
    const state: ReplicationState = !streaming ? 'disconnected' : lagBytes === 0 ? 'streaming' : 'catching_up';
    const lagging = lagSeconds !== null && lagSeconds > this.maxLagSeconds;
    return { ...base, status: streaming && !lagging ? 'healthy' : 'degraded', state, lagSeconds, lagBytes, replicaReplayLsn: r.replayLsn };
  }
}
