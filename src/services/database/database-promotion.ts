import { changeRetrying } from '../dr-state/dr-state-service.ts';
import type { DatabaseTarget } from '../../domain.ts';
import { PreconditionFailedError } from '../../http/app-error.ts';
import { restorePointBefore } from '../backup/restore-point.ts';
import { lsnGap } from './lsn.ts';
import { waitForReplicaCatchUp } from './catch-up.ts';
import type { Check, FailoverDeps, FailoverOps } from './failover-types.ts';
import { fenceNode, unfenceNode } from './node-fence.ts';
import { withProbeConnection } from '../../adapters/pg-connection.ts';
import { forgetAbandonedPromotions } from './switchover-state.ts';
import { withNodeRecorded, withPromotionRecorded } from '../dr-state/database-state.ts';

const PROMOTE_WAIT_SECONDS = 60;
/** How long a promotion waits for the replica to replay what a still-answering primary wrote. */
const CATCH_UP_WAIT_MS = 10_000;

/** POST /admin/database/promote: checked, locked, measured; the old primary fenced first when it answers. */
export class DatabasePromotion {
  constructor(
    private readonly deps: FailoverDeps,
    private readonly ops: FailoverOps,
  ) {}

  /**
   * Promotes whichever configured node is the standby now (the replica, or the old primary once it
   * was rebuilt as a standby of the replica). The check names stay those of the first release.
   */
  async promote(input: { dryRun: boolean; maxLagSeconds?: number }) {
    const started = performance.now();
    const maxLag = input.maxLagSeconds ?? this.deps.maxLagSeconds;
    const checks: Check[] = [];
    const replicaUrl = this.deps.clients.url('replica');
    checks.push({
      name: 'replica_configured',
      ok: replicaUrl !== undefined,
      detail: replicaUrl ? 'DATABASE_REPLICA_URL is set' : 'DATABASE_REPLICA_URL is not set',
    });
    const [primary, replica] = replicaUrl
      ? await Promise.all([this.ops.probe('primary'), this.ops.probe('replica')])
      : [undefined, undefined];
    this.deps.monitor.observe('primary', primary);
    this.deps.monitor.observe('replica', replica);
    const replication = this.deps.monitor.report(primary, replica);
    const node = replication.standby;
    const standby = node === 'primary' ? primary : replica;
    const alreadyPromoted =
      replicaUrl !== undefined && (replication.state === 'promoted' || (standby?.ok === true && standby.data?.inRecovery === false));
    if (replicaUrl && !alreadyPromoted) {
      checks.push({
        name: 'replica_reachable',
        ok: standby?.ok === true,
        detail: standby?.ok
          ? `the standby (${node}) answered in ${standby.latencyMs} ms`
          : `the standby (${node}) does not answer: ${standby?.error?.code ?? 'unknown'}`,
      });
    }
    if (standby?.ok && !alreadyPromoted) {
      checks.push({ name: 'replica_in_recovery', ok: true, detail: `${node} is a standby (pg_is_in_recovery)` });
      // Promoting a standby that replayed past the writer's fork (e.g. after a point-in-time
      // restore of the primary) would bring back what the restore undid.
      checks.push({
        name: 'replica_not_diverged',
        ok: replication.state !== 'diverged',
        detail:
          replication.state === 'diverged'
            ? `${replication.diverged}: rebuild ${node} as a standby of ${replication.writer} first (scripts/dr/rebuild-primary.sh)`
            : `no divergence seen (${replication.writer} is the writer)`,
      });
      const lag = replication.lagSeconds;
      checks.push({
        name: 'lag_within_bound',
        ok: lag !== null && lag <= maxLag,
        detail: lag === null ? 'replication lag is unknown' : `lag ${lag} s, bound ${maxLag} s`,
      });
      // A primary that still takes writes would acknowledge writes the promoted node never gets.
      const writer = node === 'primary' ? replica : primary;
      const primaryWrites = writer?.ok === true && writer.data?.inRecovery === false && !writer.data.fenced;
      const readOnly = this.deps.readOnlyActive();
      checks.push({
        name: 'primary_writes_stopped',
        ok: !primaryWrites || readOnly,
        detail: !primaryWrites
          ? 'the primary does not take writes (unreachable, fenced or a standby)'
          : readOnly
            ? 'the primary answers; read-only mode is on, so no instance commits on it (the replica catches up before the promotion)'
            : 'the primary still answers and read-only mode is off: turn read-only mode on first, or writes acknowledged on the old primary would be lost',
      });
    }
    const checksMs = Math.round(performance.now() - started);
    const dataLossWindow = this.dataLossWindow(
      replication.primaryLastKnownLsn,
      replication.replicaReplayLsn,
      replication.primaryLastSeenAt,
    );
    const failed = checks.filter((c) => !c.ok);
    const roles = replication.roles;

    if (alreadyPromoted) {
      return {
        promoted: false,
        alreadyPromoted: true,
        dryRun: input.dryRun,
        node: replication.writer,
        roles,
        message: `${replication.writer} is already a primary and ${node} is not a standby; nothing to promote (rebuild ${node} as a standby first)`,
        checks,
        timings: { checksMs },
      };
    }
    if (input.dryRun) {
      return {
        promoted: false,
        dryRun: true,
        wouldPromote: failed.length === 0,
        node,
        roles,
        checks,
        dataLossWindow,
        timings: { checksMs },
      };
    }
    if (failed.length > 0) {
      this.deps.metrics.failoverTotal.inc({ kind: 'promote', result: 'refused' });
      throw new PreconditionFailedError(`promotion refused: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`, { checks });
    }
    return this.ops.withLock('promote', async () => {
      // A named point on the old primary (the other node, if it still answers), to undo the failover's data
      // decisions later by a point-in-time restore; recorded in the answer and the audit event.
      const restorePoint = await restorePointBefore(this.deps.clients.url(node === 'primary' ? 'replica' : 'primary'), 'before-promote');
      const promoteStarted = performance.now();
      const oldNode: DatabaseTarget = node === 'primary' ? 'replica' : 'primary';
      // Fence the old primary first, when it answers: an instance that never applied read-only
      // mode (cut off from Redis) could otherwise still commit there after the catch-up check, and
      // lose those acknowledged writes at the promotion. Once fenced, nothing more is written on it.
      const fence = await this.fenceOldPrimary(oldNode);
      let promoted = false;
      try {
        const catchUp = await this.waitForCatchUp(node);
        await forgetAbandonedPromotions(this.deps.dr, node);
        const { replayLsn, alreadyPromoted: raced } = await this.runPromote(this.deps.clients.url(node)!);
        promoted = true;
        const promoteMs = Math.round(performance.now() - promoteStarted);
        this.deps.runners.get(node)?.invalidate();
        if (raced)
          return {
            promoted: false,
            alreadyPromoted: true,
            dryRun: false,
            node,
            message: `${node} was promoted meanwhile; nothing to do`,
            checks,
            timings: { checksMs },
          };
        this.deps.metrics.failoverTotal.inc({ kind: 'promote', result: 'success' });
        this.deps.logger.warn({ promoteMs, node, restorePoint }, 'standby promoted');
        const recorded = await this.recordPromotion(node);
        return {
          promoted: true,
          dryRun: false,
          node,
          restorePoint,
          roles: { ...roles, [node]: 'primary' },
          checks,
          identity: recorded,
          oldPrimary: fence,
          catchUp,
          dataLossWindow: this.dataLossWindow(
            replication.primaryLastKnownLsn,
            replayLsn ?? replication.replicaReplayLsn,
            replication.primaryLastSeenAt,
          ),
          timings: { checksMs, promoteMs, totalMs: Math.round(performance.now() - started) },
        };
      } catch (err) {
        this.deps.metrics.failoverTotal.inc({ kind: 'promote', result: 'failed' });
        // Not promoted: the old primary stays the writer, so lift the fence this promotion set.
        const url = this.deps.clients.url(oldNode);
        if (!promoted && fence.fenced && url) {
          await unfenceNode(url, 2000).catch((e: unknown) =>
            this.deps.logger.error({ err: String(e), oldNode }, 'promotion failed and the old primary could not be unfenced'),
          );
          this.deps.runners.get(oldNode)?.invalidate();
        }
        throw err;
      }
    });
  }

  /**
   * Records the promoted node's identity and new timeline in the DR state, so every instance
   * refuses writes to a node on an older timeline (the old primary, should it come back).
   */
  private async recordPromotion(node: DatabaseTarget) {
    const old: DatabaseTarget = node === 'primary' ? 'replica' : 'primary';
    await this.deps.runners.get(node)?.run();
    const identity = this.deps.watch.identity(node);
    if (!identity) return null;
    const previous = this.deps.watch.identity(old);
    const seen = { inRecovery: this.deps.runners.get(node)?.latest()?.data?.inRecovery ?? null };
    // The old node keeps its record only when it is on an older timeline (a former primary).
    const former = previous && previous.timeline < identity.timeline ? previous : null;
    const formerSeen = { inRecovery: this.deps.runners.get(old)?.latest()?.data?.inRecovery ?? null };
    // The node is promoted already: a concurrent change of the DR state must not leave the
    // promotion unrecorded (see changeRetrying).
    await changeRetrying(this.deps.dr, (s, now) => ({
      ...s,
      database: withPromotionRecorded(
        withNodeRecorded(withNodeRecorded(s.database, old, former, formerSeen), node, identity, seen),
        identity,
        seen,
        now,
      ),
    }));
    return identity;
  }

  /** See waitForReplicaCatchUp: a planned promotion of either node loses nothing the old primary wrote. */
  private waitForCatchUp(node: DatabaseTarget) {
    const replicaUrl = this.deps.clients.url(node)!;
    const primaryUrl = this.deps.clients.url(node === 'primary' ? 'replica' : 'primary');
    return primaryUrl
      ? waitForReplicaCatchUp(primaryUrl, replicaUrl, CATCH_UP_WAIT_MS)
      : Promise.resolve({ primaryLsn: null, waitedMs: 0 });
  }

  /** Fences the old primary right away when it still answers (it may still take writes). */
  private async fenceOldPrimary(old: DatabaseTarget): Promise<{ fenced: boolean; detail: string }> {
    const url = this.deps.clients.url(old);
    if (!url) return { fenced: false, detail: `${old} is not configured` };
    try {
      const { terminated } = await fenceNode(url, 2000);
      this.deps.runners.get(old)?.invalidate();
      this.deps.logger.warn({ terminated, old }, 'old primary fenced read-only before the promotion');
      return { fenced: true, detail: `default_transaction_read_only set, ${terminated} sessions ended` };
    } catch (err) {
      return {
        fenced: false,
        detail: `not reachable now (${err instanceof Error ? err.message : String(err)}); it is fenced when it answers again`,
      };
    }
  }

  /** pg_promote on a connection of its own, waiting for the promotion to finish. */
  private async runPromote(url: string): Promise<{ replayLsn: string | null; alreadyPromoted: boolean }> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), (PROMOTE_WAIT_SECONDS + 10) * 1000);
    try {
      return await withProbeConnection(
        { connectionString: url, timeoutMs: (PROMOTE_WAIT_SECONDS + 5) * 1000, signal: controller.signal },
        async (client) => {
          // Checked again under the lock: a racing promote may have finished meanwhile.
          const before = await client.query<{ lsn: string | null; in_recovery: boolean }>(
            'SELECT pg_last_wal_replay_lsn()::text AS lsn, pg_is_in_recovery() AS in_recovery',
          );
          const replayLsn = before.rows[0]?.lsn ?? null;
          if (!before.rows[0]?.in_recovery) return { replayLsn, alreadyPromoted: true };
          const { rows } = await client.query<{ done: boolean }>('SELECT pg_promote(true, $1) AS done', [PROMOTE_WAIT_SECONDS]);
          if (!rows[0]?.done) throw new Error(`pg_promote did not finish within ${PROMOTE_WAIT_SECONDS} s`);
          return { replayLsn, alreadyPromoted: false };
        },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  private dataLossWindow(primaryLsn: string | null, replicaLsn: string | null, primarySeenAt: string | null) {
    if (!primaryLsn || !replicaLsn) {
      return {
        bytes: null,
        primaryLastKnownLsn: primaryLsn,
        replicaReplayLsn: replicaLsn,
        description: 'unknown: the old primary was never seen by this instance',
      };
    }
    const bytes = lsnGap(primaryLsn, replicaLsn);
    return {
      bytes,
      primaryLastKnownLsn: primaryLsn,
      primaryLastSeenAt: primarySeenAt,
      replicaReplayLsn: replicaLsn,
      description:
        bytes === 0
          ? 'none known: the replica had replayed everything the old primary was last seen to have written'
          : `up to ${bytes} bytes of WAL written on the old primary (last seen ${primarySeenAt}) were not replayed on the replica: recent commits may be missing`,
    };
  }
}
