import type { DatabaseProbeData, DatabaseTarget, MediaBackendName } from '../../domain.ts';
import { DR_LOCK_TTL_MS } from '../dr-state/cluster-lock.ts';
import { AppError, DependencyUnavailableError, PreconditionFailedError } from '../../http/app-error.ts';
import { withActiveDatabase } from '../dr-state/database-state.ts';
import type { ProbeResult } from '../../health/probe-runner.ts';
import { DatabasePromotion } from './database-promotion.ts';
import { DatabaseSwitch } from './database-switch.ts';
import type { FailoverDeps, FailoverLock, FailoverOps } from './failover-types.ts';

export const DATABASE_LOCK = 'database';
/** Short, renewed while the operation runs (see DR_LOCK_TTL_MS): a dead holder frees it within seconds. */
const LOCK_TTL_MS = DR_LOCK_TTL_MS;

/**
 * Replica promotion (database-promotion.ts) and database target switches (database-switch.ts),
 * under one cluster-wide lock; the DR state's reset.
 */
export class DatabaseFailoverService implements FailoverLock {
  private readonly promotion: DatabasePromotion;
  private readonly switcher: DatabaseSwitch;

  constructor(private readonly deps: FailoverDeps) {
    const ops: FailoverOps = { withLock: (op, fn, ttl) => this.withLock(op, fn, ttl), probe: (t) => this.probe(t) };
    this.promotion = new DatabasePromotion(deps, ops);
    this.switcher = new DatabaseSwitch(deps, ops);
  }

  /** See DatabasePromotion.promote. */
  promote(input: { dryRun: boolean; maxLagSeconds?: number }) {
    return this.promotion.promote(input);
  }

  /** See DatabaseSwitch.switchDatabase. */
  switchDatabase(input: { to: DatabaseTarget; dryRun: boolean }, by: string) {
    return this.switcher.switchDatabase(input, by);
  }

  /** Runs `fn` holding the cluster-wide database lock; 409 naming the holder if someone has it. */
  async withLock<T>(operation: string, fn: () => Promise<T>, ttlMs = LOCK_TTL_MS): Promise<T> {
    return this.deps.locks.withLock(DATABASE_LOCK, operation, fn, { ttlMs, busyMessage: 'another database DR operation is running' });
  }

  /** Who holds the database lock (null: nobody, or the store does not answer). */
  lockHolder(): Promise<string | null> {
    return this.deps.locks.holder(DATABASE_LOCK);
  }

  private async probe(target: DatabaseTarget): Promise<ProbeResult<DatabaseProbeData> | undefined> {
    const runner = this.deps.runners.get(target);
    return runner ? runner.run() : undefined;
  }

  /**
   * The initial state (read-only off, media primary) with `to` (default primary) as the database
   * target and the identities of the nodes configured now. Refused (412 `newer_writable_<node>`)
   * when the other node takes writes and `to` is not as new (a standby, fenced, not answering, or on
   * an older timeline of the same cluster): the reset would point writes at the older node. The
   * reset is the operator's confirmation, so it also replaces a state lost from Redis (`seed`).
   */
  async resetState(
    by: string,
    reason: string,
    to: DatabaseTarget = 'primary',
    opts: { media?: MediaBackendName; expectVersion?: number | null; acceptOlderTimeline?: boolean } = {},
  ) {
    if (!this.deps.runners.has(to)) throw new PreconditionFailedError(`reset refused: database target ${to} is not configured`);
    // Compare-and-set on the version read now (or the one the operator saw): of two racing resets, one wins, the other 409.
    let expectVersion = opts.expectVersion;
    if (expectVersion === undefined) {
      try {
        expectVersion = await this.deps.dr.storedVersion();
      } catch (err) {
        throw new DependencyUnavailableError('redis', 'the DR state store (Redis) is unreachable; no change was made', err);
      }
    }
    await Promise.all([...this.deps.runners.values()].map((r) => r.run()));
    const other: DatabaseTarget = to === 'primary' ? 'replica' : 'primary';
    const target = this.deps.runners.get(to)?.latest();
    const rival = this.deps.runners.get(other)?.latest();
    const t = target?.ok ? target.data : undefined;
    const o = rival?.ok ? rival.data : undefined;
    // Why the target does not take writes now (null: it does).
    const notWritable = whyNotWritable(t);
    if (o && !o.inRecovery && !o.fenced) {
      const targetWrites = t !== undefined && !t.inRecovery && !t.fenced;
      const olderTimeline =
        targetWrites && t.systemId === o.systemId && t.timeline !== null && o.timeline !== null && t.timeline < o.timeline;
      if (!targetWrites || olderTimeline) {
        throw new AppError(
          412,
          `newer_writable_${other}`,
          `reset refused: ${other} takes writes${o.timeline !== null ? ` on timeline ${o.timeline}` : ''} and ${to} ${
            targetWrites ? `is on the older timeline ${t.timeline}` : notWritable
          }: the reset would point writes at the older node; reset with "database": "${other}"`,
          { node: other, timeline: o.timeline, target: to, targetTimeline: t?.timeline ?? null },
        );
      }
    }
    const identity = this.deps.watch.identity(to);
    const otherIdentity = this.deps.watch.identity(other);
    const inRecovery = t ? t.inRecovery : null;
    // The newest timeline recorded for this cluster survives the reset (a state of another cluster,
    // e.g. left by a drill, does not count): a node on an older one must not take writes because the
    // newer node happened to be down when the reset was made. The operator may accept that loss.
    // Same cluster unless a configured node answers with another system identifier than every one
    // recorded (a state left by another cluster); a target that does not answer does not make the
    // recorded newest timeline go away (found by an outside attack: a reset with both nodes down
    // dropped it, and the old primary later acknowledged writes on timeline 1).
    const current = this.deps.dr.current().database;
    const recordedIds = Object.values(current.nodes ?? {}).map((n) => n?.systemId);
    const foreign = [identity, otherIdentity].some((id) => id !== null && recordedIds.length > 0 && !recordedIds.includes(id.systemId));
    const sameCluster = !foreign && (recordedIds.length > 0 || current.newestTimeline !== undefined);
    const recordedNewest = sameCluster ? current.newestTimeline : undefined;
    const behind = recordedNewest !== undefined && identity !== null && inRecovery === false && identity.timeline < recordedNewest;
    if (behind && !opts.acceptOlderTimeline)
      throw new AppError(
        412,
        'older_than_newest_timeline',
        `reset refused: ${to} is on timeline ${identity.timeline}, older than the newest recorded for this cluster (${recordedNewest}, on a node that does not take writes now): writes there would lose what the newer timeline holds. Bring that node back, or accept the loss with "acceptOlderTimeline": true (its timeline is then recorded as abandoned)`,
        { target: to, targetTimeline: identity.timeline, newestTimeline: recordedNewest },
      );
    // A reset lifts read-only mode only onto a node that takes writes now; onto a standby, a fenced
    // node, one whose commits would wait for a missing synchronous standby or one that does not
    // answer, the mode stays on (a lift would be refused: 412 no_writable_node) and the reason says why.
    const readOnlyReason = notWritable ? `reset: ${reason}; read-only mode kept on: ${to} ${notWritable}` : `reset: ${reason}`;
    // Only the new active node sets the newest timeline at a reset; the other's identity is kept as seen.
    // A reset onto a writable replica is onto a promoted node: automatic read-only never switches back.
    return this.deps.dr.change(
      (s, now) =>
        withActiveDatabase(
          {
            readOnly: { enabled: notWritable !== null, reason: readOnlyReason, since: now, by, expiresAt: null },
            database: {
              active: to,
              since: now,
              by,
              // Identities seen now; the recorded ones where a node does not answer (same cluster).
              nodes: {
                ...(sameCluster ? current.nodes : {}),
                ...(otherIdentity ? { [other]: otherIdentity } : {}),
              },
              promotedAt: null,
              ...(sameCluster
                ? behind
                  ? {
                      // Accepted: the newer timeline is abandoned (a node on it is fenced should it come back).
                      abandonedTimelines: [
                        ...(s.database.abandonedTimelines ?? []),
                        { systemId: identity.systemId, timeline: recordedNewest, node: other, at: now },
                      ],
                    }
                  : {
                      ...(recordedNewest !== undefined ? { newestTimeline: recordedNewest } : {}),
                      // The node reset onto is the operator's choice: its own timeline is no longer abandoned.
                      ...(s.database.abandonedTimelines
                        ? {
                            abandonedTimelines: s.database.abandonedTimelines.filter(
                              (a) => !identity || a.systemId !== identity.systemId || a.timeline !== identity.timeline,
                            ),
                          }
                        : {}),
                    }
                : {}),
            },
            // The media backend given, else the current one (a reset is about the database and the state, not a media switch).
            media: { active: opts.media ?? s.media.active, since: now, by },
          },
          to,
          identity,
          { inRecovery, by, now, promoted: to === 'replica' && inRecovery === false },
        ),
      { seed: true, expectVersion },
    );
  }
}

/** Why a node (its latest probe; undefined: it does not answer) does not take writes, or null. */
function whyNotWritable(data: DatabaseProbeData | undefined): string | null {
  if (!data) return 'does not answer';
  if (data.inRecovery) return 'is a standby';
  if (data.fenced) return 'is fenced read-only';
  if (data.commitsHang) return 'makes every commit wait for a synchronous standby that is not connected';
  return null;
}
