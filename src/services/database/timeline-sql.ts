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
