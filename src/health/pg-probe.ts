import pg from 'pg';
import type { DatabaseProbeData } from '../domain.ts';
import {
  beginWithTimeout,
  CURRENT_TIMELINE_SQL,
  WAITS_FOR_SYNC_STANDBY_SQL,
  COMMITS_HANG_SQL,
  withNodeConnection,
  type PgProbeOptions,
} from '../adapters/pg-connection.ts';

/** Identity columns of the probe query: system identifier and current timeline (see CURRENT_TIMELINE_SQL). */
const IDENTITY_COLUMNS = `(SELECT system_identifier::text FROM pg_control_system()) AS system_id,
  ${CURRENT_TIMELINE_SQL} AS timeline,
  current_setting('default_transaction_read_only') = 'on' AS fenced`;

/**
 * A primary's timeline history file (`0000000N.history`: "parent timeline, switch LSN, reason" per
 * line), read only where the role may (superuser or an EXECUTE grant): otherwise NULL, never an error.
 */
const FORKS_COLUMN = `CASE WHEN NOT pg_is_in_recovery() AND has_function_privilege('pg_read_file(text, bigint, bigint, boolean)', 'execute')
         THEN pg_read_file('pg_wal/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) || '.history', 0, 1048576, true) END AS history`;

/** The history file's lines as forks; [] on timeline 1 (no file), null when it could not be read. */
export function parseTimelineHistory(text: string | null, timeline: number | null): DatabaseProbeData['forks'] {
  if (text === null) return timeline === 1 ? [] : null;
  const forks: { timeline: number; switchLsn: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (m) forks.push({ timeline: Number(m[1]), switchLsn: m[2]!.toUpperCase() });
  }
  return forks;
}

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
       ${FORKS_COLUMN},
       ${WAITS_FOR_SYNC_STANDBY_SQL} AS sync,
       ${COMMITS_HANG_SQL} AS hang,
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
  history: string | null;
  sync: boolean;
  hang: boolean;
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
      forks: row.in_recovery ? null : parseTimelineHistory(row.history, row.timeline),
      waitsForSyncStandby: row.sync,
      commitsHang: row.hang,
    };
  });
}
