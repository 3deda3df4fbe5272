import pg from 'pg';
import type { DatabaseProbeData } from '../domain.ts';
import { CURRENT_TIMELINE_SQL } from '../services/database/timeline-sql.ts';

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
function beginWithTimeout(timeoutMs: number): string {
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

/** Identity columns of the probe query: system identifier and current timeline (see CURRENT_TIMELINE_SQL). */
const IDENTITY_COLUMNS = `(SELECT system_identifier::text FROM pg_control_system()) AS system_id,
  ${CURRENT_TIMELINE_SQL} AS timeline,
  current_setting('default_transaction_read_only') = 'on' AS fenced`;

// Everything a health probe needs in one statement: with the transaction around it, one round trip.
const PROBE_SQL = `SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_xact_replay_timestamp() AS replay_at,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver_status,
       CASE WHEN pg_is_in_recovery() THEN '[]'::json ELSE
         (SELECT coalesce(json_agg(json_build_object('state', state, 'replayLsn', replay_lsn::text,
                  'replayLagSeconds', EXTRACT(EPOCH FROM replay_lag)::float8)), '[]'::json)
            FROM pg_stat_replication) END AS standbys,
       ${IDENTITY_COLUMNS}`;

interface ProbeRow {
  in_recovery: boolean;
  current_lsn: string | null;
  receive_lsn: string | null;
  replay_lsn: string | null;
  replay_at: Date | null;
  receiver_status: string | null;
  standbys: DatabaseProbeData['standbys'];
  system_id: string | null;
  timeline: number | null;
  fenced: boolean;
}

export async function probeDatabase(options: PgProbeOptions): Promise<DatabaseProbeData> {
  return withNodeConnection(options, async (client) => {
    // BEGIN; SET LOCAL; SELECT; COMMIT as one simple-protocol query: one result per statement.
    const results = (await client.query(
      `${beginWithTimeout(options.timeoutMs)}; ${PROBE_SQL}; COMMIT`,
    )) as unknown as pg.QueryResult<ProbeRow>[];
    const row = results[2]!.rows[0]!;
    return {
      systemId: row.system_id,
      timeline: row.timeline,
      fenced: row.fenced,
      inRecovery: row.in_recovery,
      currentLsn: row.current_lsn,
      receiveLsn: row.receive_lsn,
      replayLsn: row.replay_lsn,
      replayAt: row.replay_at,
      receiverStatus: row.receiver_status,
      standbys: row.standbys,
    };
  });
}
