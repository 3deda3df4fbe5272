import { PreconditionFailedError } from '../../http/app-error.ts';
import { lsnGap } from './lsn.ts';
import { PRIMARY_WAL_LSN_SQL, withProbeConnection } from '../../adapters/pg-connection.ts';

/** How often the replica's replay position is read again while it catches up. */
const CATCH_UP_POLL_MS = 5;
/** Bound on each connection and query of the check. */
const QUERY_TIMEOUT_MS = 2000;

async function queryOne<T>(url: string, sql: string): Promise<T | undefined> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), QUERY_TIMEOUT_MS);
  try {
    return await withProbeConnection(
      { connectionString: url, timeoutMs: QUERY_TIMEOUT_MS, signal: controller.signal },
      async (c) => (await c.query(sql)).rows[0] as T,
    );
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * When the old primary still answers (a planned switchover, writes stopped by read-only mode),
 * waits until the replica has replayed everything it wrote, so the promotion loses nothing; 412
 * when it does not within `waitMs`. A primary that does not answer is not waited for. The replica's
 * position is polled on one connection (each read bounded), not a new connection per read.
 */
export async function waitForReplicaCatchUp(
  primaryUrl: string,
  replicaUrl: string,
  waitMs: number,
  /** The primary's WAL position when the caller read it already (after fencing it); else read here. */
  knownPrimaryLsn: string | null = null,
): Promise<{ primaryLsn: string | null; waitedMs: number }> {
  const started = performance.now();
  const primaryLsn = knownPrimaryLsn ?? (await queryOne<{ lsn: string | null }>(primaryUrl, PRIMARY_WAL_LSN_SQL))?.lsn ?? null;
  if (!primaryLsn) return { primaryLsn: null, waitedMs: 0 };
  const deadline = Date.now() + waitMs;
  let replicaLsn: string | null = null;
  const caughtUp = () => replicaLsn !== null && lsnGap(primaryLsn, replicaLsn) === 0;
  while (!caughtUp() && Date.now() <= deadline) {
    // One connection for as many reads as fit in its bound; a failed or timed-out one is replaced.
    const controller = new AbortController();
    const until = Math.min(deadline, Date.now() + QUERY_TIMEOUT_MS);
    const timer = setTimeout(() => controller.abort(), Math.max(1, until - Date.now()) + QUERY_TIMEOUT_MS);
    try {
      await withProbeConnection({ connectionString: replicaUrl, timeoutMs: QUERY_TIMEOUT_MS, signal: controller.signal }, async (c) => {
        for (;;) {
          const { rows } = await c.query<{ lsn: string | null }>('SELECT pg_last_wal_replay_lsn()::text AS lsn');
          replicaLsn = rows[0]?.lsn ?? replicaLsn;
          if (caughtUp() || Date.now() > until) return;
          await new Promise((r) => setTimeout(r, CATCH_UP_POLL_MS));
        }
      });
    } catch {
      // The replica did not answer within the bound: try again on a new connection until the deadline.
      if (Date.now() <= deadline) await new Promise((r) => setTimeout(r, 50));
    } finally {
      clearTimeout(timer);
    }
  }
  if (caughtUp()) return { primaryLsn, waitedMs: Math.round(performance.now() - started) };
  throw new PreconditionFailedError(
    `promotion refused: the replica did not replay the primary's WAL up to ${primaryLsn} within ${waitMs} ms`,
    { primaryLsn, replicaLsn },
  );
}
