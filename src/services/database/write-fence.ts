import type { DatabaseTarget } from '../../domain.ts';
import type { DatabaseClients } from '../../adapters/database-clients.ts';
import { withNodeConnection, withProbeConnection } from '../../adapters/pg-connection.ts';
import type { FenceReport, WriteFence } from '../dr-state/dr-state-service.ts';
import { errorMessage } from '../../lib/error-message.ts';

const TARGETS: DatabaseTarget[] = ['primary', 'replica'];

/**
 * The database write fence over the configured nodes (see media-repository checkFence): on every
 * node that takes writes (not a standby, not fenced read-only by a switchover), an upsert of the
 * scope's fence row to the change's DR state version. The UPDATE waits for commits holding FOR SHARE
 * on the row (the commits under way), bounded by `timeoutMs`; connections of its own, never the
 * request pool's. Never lowers the epoch (GREATEST), so racing raises and replays are harmless.
 */
export class DatabaseWriteFence implements WriteFence {
  constructor(
    private readonly clients: DatabaseClients,
    private readonly timeoutMs: number,
    /** The DR state this fence belongs to (its Redis key prefix): one row per scope. */
    private readonly scope: string,
  ) {}

  private with<T>(url: string, fn: (client: import('pg').Client) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs + 1000);
    // Server side too (an UPDATE left waiting after the client gave up would queue new commits
    // behind it), as SET LOCAL in one transaction: a session SET would stay on the server
    // connection PgBouncer (transaction mode) hands to other clients next.
    return withProbeConnection({ connectionString: url, timeoutMs: this.timeoutMs, signal: controller.signal }, fn).finally(() =>
      clearTimeout(timer),
    );
  }

  async raise(version: number, by: string, only?: string[]): Promise<FenceReport> {
    const started = performance.now();
    const nodes: FenceReport['nodes'] = {};
    await Promise.all(
      TARGETS.filter((t) => this.clients.has(t) && (only === undefined || only.includes(t))).map(async (target) => {
        try {
          nodes[target] = await this.with(this.clients.url(target)!, async (c) => {
            const { rows } = await c.query<{ r: boolean; fenced: boolean }>(
              `SELECT pg_is_in_recovery() AS r, current_setting('default_transaction_read_only') = 'on' AS fenced`,
            );
            if (rows[0]!.r) return { outcome: 'standby' as const };
            if (rows[0]!.fenced) return { outcome: 'fenced' as const };
            // Takes the row lock: waits for the commits holding FOR SHARE on it. A commit stuck
            // while it holds the share (behind a row lock, on a paused instance) would keep the
            // fence down past its bound and then commit after the change answered: after a short
            // wait such commits are cancelled (they fail, nothing of theirs is committed).
            // The fence row matters on this node only: its own commit must not wait for a
            // synchronous standby (one that stalls would leave the fence down, the change waiting).
            await c.query('SET LOCAL synchronous_commit = local');
            const { rows: me } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
            const canceller = setTimeout(() => void this.cancelStuckCommits(this.clients.url(target)!, me[0]!.pid), this.cancelAfterMs());
            try {
              await c.query(
                `INSERT INTO dr_write_fence (scope, epoch, raised_at, raised_by) VALUES ($3, $1::bigint, now(), $2)
               ON CONFLICT (scope) DO UPDATE SET epoch = GREATEST(dr_write_fence.epoch, EXCLUDED.epoch),
                 raised_at = EXCLUDED.raised_at, raised_by = EXCLUDED.raised_by`,
                [version, by.slice(0, 200), this.scope],
              );
            } finally {
              clearTimeout(canceller);
            }
            return { outcome: 'raised' as const };
          });
        } catch (err) {
          nodes[target] = { outcome: 'failed', error: errorMessage(err) };
        }
      }),
    );
    const outcomes = Object.values(nodes);
    const raised = outcomes.filter((n) => n.outcome === 'raised').length;
    const failed = Object.entries(nodes).filter(([, n]) => n.outcome === 'failed');
    const databaseFence = failed.length === 0 && raised > 0 ? 'raised' : raised > 0 ? 'partial' : 'not_raised';
    const report: FenceReport = { databaseFence, epoch: version, nodes, waitedMs: Math.round(performance.now() - started) };
    if (databaseFence !== 'raised')
      report.reason =
        failed.length > 0 ? `not raised on ${failed.map(([t, n]) => `${t} (${n.error})`).join(', ')}` : 'no configured node takes writes';
    return report;
  }

  /** How long the raise waits for the commits under way before it cancels those still holding it up. */
  private cancelAfterMs(): number {
    return Math.max(100, Math.min(1000, Math.floor(this.timeoutMs / 4)));
  }

  /**
   * Cancels the media commits that block the fence raise running on backend `fencePid` (only
   * statements that took the fence row FOR SHARE: never another raise, never other work). Never one
   * waiting for a synchronous standby: it is committed locally already, and a cancel would only end
   * the wait (PostgreSQL keeps the commit, with a WARNING, and the client sees success) for a commit
   * the standby never got, which the next promotion loses. Such a commit keeps the fence waiting
   * (bounded) and is answered outcome_unknown by the barrier. A
   * write's commit shows as its call of media_commit_write (the statement runs inside it).
   */
  private async cancelStuckCommits(url: string, fencePid: number): Promise<void> {
    await withNodeConnection({ connectionString: url, timeoutMs: 2000, signal: AbortSignal.timeout(3000) }, async (c) => {
      await c.query(
        `SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a
          WHERE a.pid = ANY (pg_blocking_pids($1::int))
            AND a.wait_event IS DISTINCT FROM 'SyncRep'
            AND (a.query LIKE '%FROM dr_write_fence WHERE scope = %FOR SHARE%' OR a.query LIKE '%FROM media_commit_write(%')`,
        [fencePid],
      );
    }).catch(() => undefined);
  }

  async highest(): Promise<number | null> {
    const epochs = await Promise.all(
      TARGETS.filter((t) => this.clients.has(t)).map((t) =>
        this.with(this.clients.url(t)!, async (c) => {
          const { rows } = await c.query<{ epoch: string }>(`SELECT epoch::text AS epoch FROM dr_write_fence WHERE scope = $1`, [
            this.scope,
          ]);
          return rows[0] ? Number(rows[0].epoch) : null;
        }).catch(() => null),
      ),
    );
    const known = epochs.filter((e): e is number => e !== null);
    return known.length > 0 ? Math.max(...known) : null;
  }
}
