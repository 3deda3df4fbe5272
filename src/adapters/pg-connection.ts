import pg from 'pg';

/**
 * PostgreSQL connections of their own to one node, outside the request pool: used by the health
 * probe (src/health/pg-probe.ts), by failover, fencing, catch-up and the WAL archive checks.
 */

export interface PgProbeOptions {
  connectionString: string;
  timeoutMs: number;
  signal: AbortSignal;
}

/**
 * Runs queries on a connection of its own (outside any transaction: ALTER SYSTEM needs that),
 * never one from the request pool, so a hung server
 * cannot starve requests. The connection has connect and query timeouts, and is destroyed the
 * moment the signal fires.
 */
export async function withNodeConnection<T>(options: PgProbeOptions, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const { connectionString, timeoutMs, signal } = options;
  signal.throwIfAborted();
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'sav3-health-probe',
  });
  // An error after the probe gave up (e.g. the socket destroyed below) must not crash the process.
  client.on('error', () => undefined);
  const destroy = () => destroySocket(client);
  signal.addEventListener('abort', destroy, { once: true });
  try {
    await client.connect();
    return await fn(client);
  } finally {
    signal.removeEventListener('abort', destroy);
    if (signal.aborted) destroy();
    else client.end().catch(() => undefined);
  }
}

/**
 * The server-side statement timeout, set after connecting and never as a startup parameter:
 * PgBouncer refuses startup parameters it does not know ("unsupported startup parameter:
 * statement_timeout"). SET LOCAL, inside the probe's own transaction, so that behind PgBouncer in
 * transaction mode it cannot outlive the probe on a server connection other clients use next.
 * `timeoutMs` is a validated integer, never user input.
 */
export function beginWithTimeout(timeoutMs: number): string {
  return `BEGIN; SET LOCAL statement_timeout = ${Math.trunc(timeoutMs)}`;
}

/** withConnection, with every query of `fn` in one transaction under the statement timeout. */
export async function withProbeConnection<T>(options: PgProbeOptions, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  return withNodeConnection(options, async (client) => {
    await client.query(beginWithTimeout(options.timeoutMs));
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  });
}

/**
 * Cuts the socket with an error, as pg's own connect timeout does: that settles a pending
 * connect() or query. (client.end() while connecting would leave connect() pending forever.)
 */
function destroySocket(client: pg.Client): void {
  const connection = (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection;
  connection?.stream?.destroy(new Error('probe aborted: no answer within the health timeout'));
}

/** Whether a node's commits wait for a synchronous standby (synchronous_standby_names set, synchronous_commit neither off nor local). */
export const WAITS_FOR_SYNC_STANDBY_SQL = `(current_setting('synchronous_standby_names') <> ''
    AND current_setting('synchronous_commit') NOT IN ('off', 'local'))`;

/**
 * A primary's commits hang: they wait for a synchronous standby and none streams as one (a standby
 * whose sync state is hidden, to a role without pg_read_all_stats, counts as connected), or a
 * commit has waited for one (wait event SyncRep) for more than 2 s: a standby that stalls, or a
 * setting asking for more synchronous standbys (FIRST 2, ANY 2) than stream.
 */
export const COMMITS_HANG_SQL = `(NOT pg_is_in_recovery() AND ${WAITS_FOR_SYNC_STANDBY_SQL} AND (
      NOT EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IS NULL OR (state = 'streaming' AND sync_state IN ('sync', 'quorum')))
      OR EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND clock_timestamp() - query_start > interval '2 seconds')))`;

/** The timeline a node is on now (CURRENT_TIMELINE_SQL), within `timeoutMs`; undefined when it cannot say. */
export async function readCurrentTimeline(connectionString: string, timeoutMs: number): Promise<number | undefined> {
  return withProbeConnection({ connectionString, timeoutMs, signal: AbortSignal.timeout(timeoutMs) }, async (c) => {
    const { rows } = await c.query<{ tl: number | null }>(`SELECT ${CURRENT_TIMELINE_SQL} AS tl`);
    return rows[0]?.tl ? Number(rows[0].tl) : undefined;
  });
}

/** A primary's current WAL position (null on a standby). */
export const PRIMARY_WAL_LSN_SQL = 'SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS lsn';

/**
 * A node's current timeline, as SQL. `pg_control_checkpoint()` alone lags: right after a
 * promotion it still names the old timeline until the next checkpoint. A primary's current WAL
 * file name starts with its timeline (8 hex digits), exact at once; a standby counts the timeline
 * its WAL receiver gets too. (Every function here is executable by every role by default.)
 */
export const CURRENT_TIMELINE_SQL = `GREATEST(
    (SELECT timeline_id FROM pg_control_checkpoint()),
    CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
  )`;
