/**
 * Domain vocabulary shared by configuration, services, health and routes. Nothing here depends on
 * any other module of the service, so every layer may import it without forming a loop.
 */

/** A configured PostgreSQL node, by its configured role (the names stay after a promotion). */
export type DatabaseTarget = 'primary' | 'replica';

/** A configured object store. */
export type MediaBackendName = 'primary' | 'backup';

/** What one database probe learns about a node (pg-probe.ts reads it; health and failover use it). */
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
  /** The node's identity: cluster system identifier and timeline (null without the rights to read them). */
  systemId: string | null;
  timeline: number | null;
  /** default_transaction_read_only is on: the node was fenced (or configured) read-only. */
  fenced: boolean;
  /**
   * Primary on a timeline above 1: where each earlier timeline ended (its `.history` file); null
   * on a standby, on timeline 1, or without the right to read it (pg_read_file).
   */
  forks?: { timeline: number; switchLsn: string }[] | null;
  /** Its commits wait for a synchronous standby (synchronous_standby_names set, synchronous_commit not off/local). */
  waitsForSyncStandby?: boolean;
  /**
   * Primary: its commits wait for a synchronous standby and none is connected as one (streaming
   * with sync_state sync or quorum): every commit would hang. False when the standbys' sync state
   * cannot be read (without pg_read_all_stats).
   */
  commitsHang?: boolean;
}
