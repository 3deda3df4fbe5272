import pg from 'pg';

export interface PgProbeOptions {
  connectionString: string;
  timeoutMs: number;
  signal: AbortSignal;
}

/**
 * Runs queries on a connection of its own, never one from the request pool, so a hung server
 * cannot starve requests. The connection has connect, statement and query timeouts, and is
 * destroyed the moment the signal fires.
 *
 * The statement timeout is set after connecting, never as a startup parameter: PgBouncer refuses
 * startup parameters it does not know ("unsupported startup parameter: statement_timeout"). It is
 * set with SET LOCAL inside the probe's own transaction, so that behind PgBouncer in transaction
 * mode it cannot outlive the probe on a server connection that other clients use next.
 */
export async function withProbeConnection<T>(options: PgProbeOptions, fn: (client: pg.Client) => Promise<T>): Promise<T> {
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
    // One round trip; timeoutMs is a validated integer, never user input.
    await client.query(`BEGIN; SET LOCAL statement_timeout = ${Math.trunc(timeoutMs)}`);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } finally {
    signal.removeEventListener('abort', destroy);
    if (signal.aborted) destroy();
    else client.end().catch(() => undefined);
  }
}

/**
 * Cuts the socket with an error, as pg's own connect timeout does: that settles a pending
 * connect() or query. (client.end() while connecting would leave connect() pending forever.)
 */
function destroySocket(client: pg.Client): void {
  const connection = (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection;
  connection?.stream?.destroy(new Error('probe aborted: no answer within the health timeout'));
}

export interface DatabaseProbeData {
  inRecovery: boolean;
  /** Primary: its current WAL position. */
  currentLsn: string | null;
  /** Standby: WAL received and replayed, the last replayed commit, the WAL receiver's status. */
  receiveLsn: string | null;
  replayLsn: string | null;
  replayAt: Date | null;
  receiverStatus: string | null;
  /** Primary: its standbys as pg_stat_replication sees them. */
  standbys: { state: string; replayLsn: string | null; replayLagSeconds: number | null }[];
}

export async function probeDatabase(options: PgProbeOptions): Promise<DatabaseProbeData> {
  return withProbeConnection(options, async (client) => {
    const { rows } = await client.query<{
      in_recovery: boolean;
      current_lsn: string | null;
      receive_lsn: string | null;
      replay_lsn: string | null;
      replay_at: Date | null;
      receiver_status: string | null;
    }>(`SELECT pg_is_in_recovery() AS in_recovery,
              CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
              pg_last_wal_receive_lsn()::text AS receive_lsn,
              pg_last_wal_replay_lsn()::text AS replay_lsn,
              pg_last_xact_replay_timestamp() AS replay_at,
              (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver_status`);
    const row = rows[0]!;
    const standbys = row.in_recovery
      ? []
      : (
          await client.query<{ state: string; replay_lsn: string | null; lag: number | null }>(
            'SELECT state, replay_lsn::text AS replay_lsn, EXTRACT(EPOCH FROM replay_lag)::float8 AS lag FROM pg_stat_replication',
          )
        ).rows.map((r) => ({ state: r.state, replayLsn: r.replay_lsn, replayLagSeconds: r.lag }));
    return {
      inRecovery: row.in_recovery,
      currentLsn: row.current_lsn,
      receiveLsn: row.receive_lsn,
      replayLsn: row.replay_lsn,
      replayAt: row.replay_at,
      receiverStatus: row.receiver_status,
      standbys,
    };
  });
}
