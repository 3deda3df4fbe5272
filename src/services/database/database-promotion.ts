import { changeRetrying } from '../dr-state/dr-state-service.ts';
import type { DatabaseTarget } from '../../domain.ts';
import { PreconditionFailedError } from '../../http/app-error.ts';
import { writeGeneratedRestorePoint, writeRestorePoint, type RestorePoint } from '../backup/restore-point.ts';
import { lsnGap } from './lsn.ts';
import { waitForReplicaCatchUp } from './catch-up.ts';
import type { Check, FailoverDeps, FailoverOps } from './failover-types.ts';
import { fenceOn, unfenceNode } from './node-fence.ts';
import { PRIMARY_WAL_LSN_SQL, withNodeConnection, withProbeConnection } from '../../adapters/pg-connection.ts';
import { syncStandbyCheck } from './switchover-checks.ts';
import { forgetAbandonedPromotions } from './switchover-state.ts';
import { withNodeRecorded, withPromotionRecorded } from '../dr-state/database-state.ts';
import { errorMessage } from '../../lib/error-message.ts';

const PROMOTE_WAIT_SECONDS = 60;
/** How often the end of a signalled promotion is checked. */
const PROMOTE_POLL_MS = 5;
/** How long a promotion waits for the replica to replay what a still-answering primary wrote. */
const CATCH_UP_WAIT_MS = 10_000;
/** Bound on connecting to the old primary and on each of its statements (restore point, fence). */
const OLD_PRIMARY_TIMEOUT_MS = 2000;

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
      checks.push(syncStandbyCheck('replica_not_waiting_for_sync_standby', node, standby.data?.waitsForSyncStandby));
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
      const answers = writer?.ok === true && writer.data !== undefined;
      const primaryWrites = answers && writer.data?.inRecovery === false && !writer.data.fenced;
      const readOnly = this.deps.readOnlyActive();
      // Unreachable from here proves nothing: another instance may still reach the primary and
      // acknowledge writes the promoted node never gets (a partition). Only read-only mode, applied
      // by every instance, or the primary itself seen fenced or in recovery, stops its writes.
      checks.push({
        name: 'primary_writes_stopped',
        ok: readOnly || (answers && !primaryWrites),
        detail: readOnly
          ? primaryWrites
            ? 'the primary answers; read-only mode is on, so no instance commits on it (the replica catches up before the promotion)'
            : 'read-only mode is on: no instance commits on the primary'
          : answers && !primaryWrites
            ? 'the primary does not take writes (fenced or a standby)'
            : answers
              ? 'the primary still answers and read-only mode is off: turn read-only mode on first, or writes acknowledged on the old primary would be lost'
              : 'the primary does not answer from this instance, but another instance may still reach it and acknowledge writes the promoted node would never get: turn read-only mode on first (it waits for every instance), then promote',
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
      const promoteStarted = performance.now();
      const oldNode: DatabaseTarget = node === 'primary' ? 'replica' : 'primary';
      // A named point on the old primary (the other node, if it still answers), to undo the failover's data
      // decisions later by a point-in-time restore; recorded in the answer and the audit event.
      // Then fence the old primary, when it answers: an instance that never applied read-only
      // mode (cut off from Redis) could otherwise still commit there after the catch-up check, and
      // lose those acknowledged writes at the promotion. Once fenced, nothing more is written on it.
      const { restorePoint, fence, walLsn } = await this.restorePointAndFence(oldNode);
      let promoted = false;
      try {
        const catchUp = await this.waitForCatchUp(node, walLsn);
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
          identity: recorded?.identity ?? null,
          // The DR state change that recorded it (its version and fence), not whatever is current when the route answers.
          recordedChange: recorded?.change,
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
    const change = await changeRetrying(this.deps.dr, (s, now) => ({
      ...s,
      database: withPromotionRecorded(
        withNodeRecorded(withNodeRecorded(s.database, old, former, formerSeen), node, identity, seen),
        identity,
        seen,
        now,
      ),
    }));
    return { identity, change };
  }

  /** See waitForReplicaCatchUp: a planned promotion of either node loses nothing the old primary wrote. */
  private waitForCatchUp(node: DatabaseTarget, primaryLsn: string | null) {
    const replicaUrl = this.deps.clients.url(node)!;
    const primaryUrl = this.deps.clients.url(node === 'primary' ? 'replica' : 'primary');
    return primaryUrl
      ? waitForReplicaCatchUp(primaryUrl, replicaUrl, CATCH_UP_WAIT_MS, primaryLsn)
      : Promise.resolve({ primaryLsn: null, waitedMs: 0 });
  }

  /**
   * On the old primary, when it still answers, on one connection: a named restore point (best
   * effort: to undo the failover's data decisions later by a point-in-time restore), then the fence
   * (it may still take writes). One connection instead of two keeps a connection set-up out of the
   * write unavailability; the order is unchanged (the fence ends every other session).
   */
  private async restorePointAndFence(old: DatabaseTarget): Promise<{
    restorePoint: RestorePoint | { error: string };
    fence: { fenced: boolean; detail: string };
    /** The old primary's WAL position once fenced (null: not read), for the catch-up wait. */
    walLsn: string | null;
  }> {
    const url = this.deps.clients.url(old);
    if (!url)
      return {
        restorePoint: { error: 'no database configured' },
        fence: { fenced: false, detail: `${old} is not configured` },
        walLsn: null,
      };
    let restorePoint: RestorePoint | { error: string } | undefined;
    let walLsn: string | null = null;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 2 * OLD_PRIMARY_TIMEOUT_MS);
    try {
      const { terminated } = await withNodeConnection(
        { connectionString: url, timeoutMs: OLD_PRIMARY_TIMEOUT_MS, signal: controller.signal },
        async (client) => {
          // On this connection (one set-up less), recorded like every restore point.
          restorePoint = await writeGeneratedRestorePoint(
            (name) => writeRestorePoint(client, name, 'system:before-promote'),
            'before-promote',
          ).catch((err: unknown) => ({
            error: errorMessage(err),
          }));
          const fenced = await fenceOn(client);
          // Where the catch-up must reach, read after the fence (on this connection: one set-up less).
          walLsn = await client
            .query<{ lsn: string | null }>(PRIMARY_WAL_LSN_SQL)
            .then((r) => r.rows[0]?.lsn ?? null)
            .catch(() => null);
          return fenced;
        },
      );
      this.deps.runners.get(old)?.invalidate();
      this.deps.logger.warn({ terminated, old }, 'old primary fenced read-only before the promotion');
      return {
        restorePoint: restorePoint ?? { error: 'not created' },
        fence: { fenced: true, detail: `default_transaction_read_only set, ${terminated} sessions ended` },
        walLsn,
      };
    } catch (err) {
      const message = errorMessage(err);
      return {
        restorePoint: restorePoint ?? { error: message },
        fence: { fenced: false, detail: `not reachable now (${message}); it is fenced when it answers again` },
        walLsn: null,
      };
    } finally {
      clearTimeout(timer);
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
          // pg_promote(wait => true) checks for the end of recovery only every 100 ms (PostgreSQL's
          // WAITS_PER_SECOND); the promotion itself takes a few ms. Signalled without the wait, its end
          // is watched here, as closely, on the same connection (still bounded by PROMOTE_WAIT_SECONDS).
          const { rows } = await client.query<{ signalled: boolean }>('SELECT pg_promote(false) AS signalled');
          if (!rows[0]?.signalled) throw new Error('pg_promote could not signal the standby to promote');
          const deadline = performance.now() + PROMOTE_WAIT_SECONDS * 1000;
          for (;;) {
            const now = await client.query<{ in_recovery: boolean }>('SELECT pg_is_in_recovery() AS in_recovery');
            if (!now.rows[0]?.in_recovery) break;
            if (performance.now() > deadline) throw new Error(`pg_promote did not finish within ${PROMOTE_WAIT_SECONDS} s`);
            await new Promise((r) => setTimeout(r, PROMOTE_POLL_MS));
          }
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
