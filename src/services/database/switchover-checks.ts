import type { DatabaseTarget } from '../../domain.ts';
import type { Check } from './failover-types.ts';
import { lsnGap } from './lsn.ts';
import type { NodeFacts } from './sql-nodes.ts';
import { other, type SwitchoverDeps } from './switchover-types.ts';

export interface SwitchoverCheck {
  checks: Check[];
  /** The node that is the primary now: the standby's peer, or `to` itself when there is nothing to do. */
  from: DatabaseTarget;
  facts: Partial<Record<DatabaseTarget, NodeFacts>>;
  /** `to` already is the primary and the active target. */
  done: boolean;
}

/**
 * A node about to be promoted has no standby of its own (the old primary is fenced, not streaming
 * from it): if its commits wait for a synchronous standby, every one of them would hang.
 */
export function syncStandbyCheck(name: string, node: DatabaseTarget, waitsForSyncStandby: boolean | undefined): Check {
  return {
    name,
    ok: waitsForSyncStandby !== true,
    detail:
      waitsForSyncStandby === true
        ? `${node} has synchronous_standby_names set: once promoted every commit would wait for a standby it does not have; on ${node}: ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf()`
        : `commits on ${node} will not wait for a synchronous standby`,
  };
}

/** The switchover's preconditions: the pair, the roles, and a standby that streams, replays and is caught up. */
export async function checkSwitchover(
  deps: Pick<SwitchoverDeps, 'clients' | 'nodes' | 'dr'>,
  to: DatabaseTarget,
  maxLagBytes: number,
): Promise<SwitchoverCheck> {
  const from = other(to);
  const checks: Check[] = [];
  const configured = deps.clients.has('primary') && deps.clients.has('replica');
  checks.push({
    name: 'pair_configured',
    ok: configured,
    detail: configured ? 'DATABASE_URL and DATABASE_REPLICA_URL are set' : 'a switchover needs both DATABASE_URL and DATABASE_REPLICA_URL',
  });
  if (!configured) return { checks, from, facts: {}, done: false };
  const [f, t] = await Promise.all([deps.nodes.facts(from), deps.nodes.facts(to)]);
  const facts = { [from]: f, [to]: t } as Partial<Record<DatabaseTarget, NodeFacts>>;
  if (t.ok && !t.inRecovery && (!f.ok || f.inRecovery || f.fenced) && deps.dr.current().database.active === to) {
    // Nothing to switch: `to` is the primary now, so it is also where the switchover would come from.
    return { checks, from: to, facts, done: true };
  }
  checks.push({
    name: 'old_primary_is_primary',
    ok: f.ok && !f.inRecovery,
    detail: !f.ok
      ? `${from} does not answer: ${f.error}`
      : f.inRecovery
        ? `${from} is a standby, not the primary`
        : `${from} is the primary (timeline ${f.timeline})`,
  });
  const active = deps.dr.current().database.active;
  checks.push({ name: 'old_primary_is_active', ok: active === from, detail: `the instances write to ${active}` });
  checks.push({
    name: 'target_is_standby',
    ok: t.ok && t.inRecovery,
    detail: !t.ok ? `${to} does not answer: ${t.error}` : t.inRecovery ? `${to} is a standby` : `${to} is not in recovery`,
  });
  if (f.ok && t.ok && t.inRecovery) {
    const streaming = t.receiverStatus === 'streaming' && f.streamingStandbys > 0;
    checks.push({
      name: 'target_streaming',
      ok: streaming,
      detail: `${to} WAL receiver: ${t.receiverStatus ?? 'none'}; standbys streaming from ${from}: ${f.streamingStandbys}`,
    });
    checks.push({
      name: 'target_replaying',
      ok: !t.replayPaused,
      detail: t.replayPaused ? `WAL replay on ${to} is paused (pg_wal_replay_resume)` : 'WAL replay runs',
    });
    checks.push(syncStandbyCheck('target_not_waiting_for_sync_standby', to, t.waitsForSyncStandby));
    const lag = f.currentLsn && t.replayLsn ? lsnGap(f.currentLsn, t.replayLsn) : null;
    checks.push({
      name: 'target_caught_up',
      ok: lag !== null && lag <= maxLagBytes,
      detail: lag === null ? 'replay position unknown' : `${to} replayed up to ${lag} bytes behind ${from} (bound ${maxLagBytes})`,
    });
  }
  return { checks, from, facts, done: false };
}
