import { PreconditionFailedError } from '../../http/app-error.ts';
import { lsnGap } from './lsn.ts';
import { withProbeConnection } from '../../adapters/pg-connection.ts';

async function queryOne<T>(url: string, sql: string): Promise<T | undefined> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 2000);
  try {
    return await withProbeConnection(
      { connectionString: url, timeoutMs: 2000, signal: controller.signal },
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
 * when it does not within `waitMs`. A primary that does not answer is not waited for.
 */
export async function waitForReplicaCatchUp(
  primaryUrl: string,
  replicaUrl: string,
  waitMs: number,
): Promise<{ primaryLsn: string | null; waitedMs: number }> {
  const started = performance.now();
  const primary = await queryOne<{ lsn: string | null }>(
    primaryUrl,
    'SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS lsn',
  );
  const primaryLsn = primary?.lsn ?? null;
  if (!primaryLsn) return { primaryLsn: null, waitedMs: 0 };
  const deadline = Date.now() + waitMs;
  for (;;) {
    const replica = await queryOne<{ lsn: string | null }>(replicaUrl, 'SELECT pg_last_wal_replay_lsn()::text AS lsn');
    if (replica?.lsn && lsnGap(primaryLsn, replica.lsn) === 0) return { primaryLsn, waitedMs: Math.round(performance.now() - started) };
    if (Date.now() > deadline) {
      throw new PreconditionFailedError(
        `promotion refused: the replica did not replay the primary's WAL up to ${primaryLsn} within ${waitMs} ms`,
        { primaryLsn, replicaLsn: replica?.lsn ?? null },
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
