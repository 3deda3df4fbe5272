import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import type { ProbeResult } from '../../health/probe-runner.ts';
import { lsnGap, parseLsn } from './lsn.ts';

/** `diverged`: the standby holds WAL its writer never had; it can never follow it (rebuild it). */
export type ReplicationState = 'streaming' | 'catching_up' | 'disconnected' | 'promoted' | 'unreachable' | 'diverged';
/** `fenced`: out of recovery but read-only at the server (an old primary after a promotion or switchover). */
export type NodeRole = 'primary' | 'standby' | 'fenced' | 'unreachable';
export type Direction = 'primary->replica' | 'replica->primary';

export interface ReplicationReport {
  status: 'healthy' | 'degraded';
  /** The standby node's state (or `promoted`: it was promoted and has no standby of its own yet). */
  state: ReplicationState;
  lagSeconds: number | null;
  lagBytes: number | null;
  /** The writing node's last known WAL position, and when it was seen. */
  primaryLastKnownLsn: string | null;
  primaryLastSeenAt: string | null;
  /** The standby node's replay position. */
  replicaReplayLsn: string | null;
  /** Which configured connection holds which role now; WAL flows from `writer` to `standby`. */
  roles: Record<DatabaseTarget, NodeRole>;
  writer: DatabaseTarget;
  standby: DatabaseTarget;
  direction: Direction;
  /** With state `diverged`: why. */
  diverged?: string;
}

/**
 * Whether a standby holds WAL its writer never had (the writer was restored to a point in time, or
 * promoted, after the standby had replayed past that point): true/false with the reason, or
 * undefined when it cannot be told (a timeline or the writer's history unknown).
 */
export function divergence(standby: DatabaseProbeData, writer: DatabaseProbeData): { diverged: boolean; detail: string } | undefined {
  const [ts, tw] = [standby.timeline, writer.timeline];
  const at = standby.replayLsn ?? standby.receiveLsn;
  if (ts === null || tw === null || at === null) return undefined;
  if (ts === tw) return { diverged: false, detail: `both on timeline ${tw}` };
  if (ts > tw) return { diverged: true, detail: `the standby is on timeline ${ts}, newer than the writer's ${tw}` };
  if (!writer.forks) return undefined;
  const fork = writer.forks.find((f) => f.timeline === ts);
  if (!fork) return { diverged: true, detail: `the standby's timeline ${ts} is not in the writer's history (timeline ${tw})` };
  if (parseLsn(at) > parseLsn(fork.switchLsn))
    return {
      diverged: true,
      detail: `the standby replayed timeline ${ts} to ${at}, past ${fork.switchLsn} where the writer's history left it: it holds changes the writer does not have`,
    };
  return {
    diverged: false,
    detail: `the standby (timeline ${ts}, at ${at}) is before the writer's fork at ${fork.switchLsn} and can follow timeline ${tw}`,
  };
}

const other = (t: DatabaseTarget): DatabaseTarget => (t === 'primary' ? 'replica' : 'primary');

/**
 * Turns the latest probes of the two configured nodes into replication facts, in whichever
 * direction the pair runs: the names `primary`/`replica` are the configured connections, the
 * roles are what the servers say they are. It remembers each node's last known WAL position as a
 * writer, so after the writer dies the gap to the standby's replay position still says how much
 * acknowledged data the standby may lack: the data-loss window.
 */
export class ReplicationMonitor {
  private readonly lastWrite = new Map<DatabaseTarget, { lsn: string; at: Date }>();
  /** The node most recently seen in recovery: when it is the writer, it was promoted since. */
  private lastStandby: DatabaseTarget = 'replica';
  private lastWriter: DatabaseTarget = 'primary';

  constructor(
    private readonly maxLagSeconds: number,
    /** The DR state's active target: the writer of record when both nodes claim to be primaries. */
    private readonly active: () => DatabaseTarget = () => 'primary',
  ) {}

  observe(target: DatabaseTarget, result: ProbeResult<DatabaseProbeData> | undefined): void {
    if (!result?.ok || !result.data) return;
    if (result.data.inRecovery) this.lastStandby = target;
    else if (result.data.currentLsn) this.lastWrite.set(target, { lsn: result.data.currentLsn, at: result.checkedAt });
  }

  observePrimary(result: ProbeResult<DatabaseProbeData>): void {
    this.observe('primary', result);
  }

  report(
    primary: ProbeResult<DatabaseProbeData> | undefined,
    replica: ProbeResult<DatabaseProbeData> | undefined,
    now = Date.now(),
  ): ReplicationReport {
    const probes: Record<DatabaseTarget, ProbeResult<DatabaseProbeData> | undefined> = { primary, replica };
    const role = (t: DatabaseTarget): NodeRole => {
      const p = probes[t];
      return !p?.ok || !p.data ? 'unreachable' : p.data.inRecovery ? 'standby' : p.data.fenced ? 'fenced' : 'primary';
    };
    const roles = { primary: role('primary'), replica: role('replica') };
    let writer: DatabaseTarget;
    if (roles.primary === 'primary' && roles.replica === 'primary') writer = this.active();
    else if (roles.primary === 'primary') writer = 'primary';
    else if (roles.replica === 'primary') writer = 'replica';
    else if (roles.replica === 'standby') writer = 'primary';
    else if (roles.primary === 'standby') writer = 'replica';
    else writer = this.lastWriter;
    this.lastWriter = writer;
    const standby = other(writer);
    const write = this.lastWrite.get(writer);
    const base = {
      roles,
      writer,
      standby,
      direction: `${writer}->${standby}` as Direction,
      primaryLastKnownLsn: write?.lsn ?? null,
      primaryLastSeenAt: write?.at.toISOString() ?? null,
    };
    const s = probes[standby];
    if (!s?.ok || !s.data) {
      // A promoted writer whose old partner has not come back as a standby yet: it takes writes,
      // with no standby to fail over to (degraded until its partner is rebuilt as one).
      const state =
        writer === this.lastStandby && roles[writer] !== 'unreachable' && roles[writer] !== 'standby' ? 'promoted' : 'unreachable';
      return {
        ...base,
        status: 'degraded',
        state,
        lagSeconds: null,
        lagBytes: null,
        replicaReplayLsn: null,
      };
    }
    const r = s.data;
    if (!r.inRecovery) {
      // Both servers out of recovery: two primaries until the other one is rebuilt as a standby.
      return { ...base, status: 'degraded', state: 'promoted', lagSeconds: null, lagBytes: null, replicaReplayLsn: r.currentLsn };
    }
    const w = probes[writer];
    const split = w?.ok && w.data && !w.data.inRecovery ? divergence(r, w.data) : undefined;
    if (split?.diverged)
      return {
        ...base,
        status: 'degraded',
        state: 'diverged',
        lagSeconds: null,
        lagBytes: null,
        replicaReplayLsn: r.replayLsn,
        diverged: split.detail,
      };
    const lagBytes = write && r.replayLsn ? lsnGap(write.lsn, r.replayLsn) : null;
    let lagSeconds: number | null;
    const seen = w?.ok && !w.data?.inRecovery ? w.data?.standbys.find((x) => x.replayLsn !== null) : undefined;
    if (lagBytes === 0) lagSeconds = 0;
    else if (seen) {
      // The writer's own measure. PostgreSQL sets replay_lag to NULL once an idle standby has
      // caught up: that is no lag, not an unknown one (WAL such as checkpoints advances without
      // commits, so the age of the last replayed commit would read as minutes of false lag).
      lagSeconds = seen.replayLagSeconds ?? 0;
    } else {
      // The writer is gone: how long since the standby last replayed a commit is all there is.
      lagSeconds = r.replayAt ? Math.max(0, (now - r.replayAt.getTime()) / 1000) : null;
    }
    if (lagSeconds !== null) lagSeconds = Math.round(lagSeconds * 1000) / 1000;
    const streaming = r.receiverStatus === 'streaming';
    const state: ReplicationState = !streaming ? 'disconnected' : lagBytes === 0 ? 'streaming' : 'catching_up';
    const lagging = lagSeconds !== null && lagSeconds > this.maxLagSeconds;
    return { ...base, status: streaming && !lagging ? 'healthy' : 'degraded', state, lagSeconds, lagBytes, replicaReplayLsn: r.replayLsn };
  }
}
