import type { DatabaseTarget } from '../../domain.ts';
import type pg from 'pg';
import type { DatabaseClients } from '../../adapters/database-clients.ts';
import { CURRENT_TIMELINE_SQL, WAITS_FOR_SYNC_STANDBY_SQL, withNodeConnection } from '../../adapters/pg-connection.ts';

export interface NodeFacts {
  ok: boolean;
  error?: string;
  inRecovery: boolean;
  /** Primary: its WAL insert position. */
  currentLsn: string | null;
  replayLsn: string | null;
  replayPaused: boolean;
  receiverStatus: string | null;
  streamingStandbys: number;
  /** default_transaction_read_only is on: fenced by a switchover. */
  fenced: boolean;
  timeline: number | null;
  /**
   * Commits on this node wait for a synchronous standby (synchronous_standby_names set, and
   * synchronous_commit neither off nor local): once promoted with no standby of its own, every
   * commit would hang. Absent: not read.
   */
  waitsForSyncStandby?: boolean;
}

/** Statement bound for the switchover's own connections (never the request pool's). */
const SQL_TIMEOUT_MS = 10_000;
const FENCE_APPLY_MS = 2000;
const PROMOTE_WAIT_MS = 30_000;
const TERMINATE_WAIT_MS = 5000;
const STOP_WAIT_MS = 10_000;

/**
 * What a switchover does to a database node, over SQL on connections of its own. Fencing needs a
 * role that may run ALTER SYSTEM and pg_terminate_backend (a superuser, or PostgreSQL 15's
 * GRANT ALTER SYSTEM ON PARAMETER plus pg_signal_backend).
 */
export class SqlNodes {
  constructor(private readonly clients: DatabaseClients) {}

  private with<T>(target: DatabaseTarget, fn: (client: pg.Client) => Promise<T>, timeoutMs = SQL_TIMEOUT_MS): Promise<T> {
    const url = this.clients.url(target);
    if (url === undefined) throw new Error(`database target ${target} is not configured`);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs + 1000);
    return withNodeConnection({ connectionString: url, timeoutMs, signal: controller.signal }, fn).finally(() => clearTimeout(timer));
  }

  async facts(target: DatabaseTarget): Promise<NodeFacts> {
    try {
      return await this.with(
        target,
        async (c) => {
          const { rows } = await c.query<{
            in_recovery: boolean;
            current_lsn: string | null;
            replay_lsn: string | null;
            replay_paused: boolean;
            receiver_status: string | null;
            streaming: number;
            fenced: boolean;
            timeline: number | null;
            sync: boolean;
          }>(
            `SELECT pg_is_in_recovery() AS in_recovery,
                  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn()::text END AS current_lsn,
                  pg_last_wal_replay_lsn()::text AS replay_lsn,
                  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused,
                  (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver_status,
                  (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')::int AS streaming,
                  current_setting('default_transaction_read_only') = 'on' AS fenced,
                  ${CURRENT_TIMELINE_SQL} AS timeline,
                  ${WAITS_FOR_SYNC_STANDBY_SQL} AS sync`,
          );
          const r = rows[0]!;
          return {
            ok: true,
            inRecovery: r.in_recovery,
            currentLsn: r.current_lsn,
            replayLsn: r.replay_lsn,
            replayPaused: r.replay_paused,
            receiverStatus: r.receiver_status,
            streamingStandbys: r.streaming,
            fenced: r.fenced,
            timeline: r.timeline,
            waitsForSyncStandby: r.sync,
          };
        },
        3000,
      );
    } catch (err) {
      return {
        ok: false,
        error: err instanceof Error ? err.message : String(err),
        inRecovery: false,
        currentLsn: null,
        replayLsn: null,
        replayPaused: false,
        receiverStatus: null,
        streamingStandbys: 0,
        fenced: false,
        timeline: null,
      };
    }
  }

  /**
   * Nothing more can commit on `target`: new transactions are read-only (ALTER SYSTEM, so a
   * restart keeps the fence), every other session is ended (an open transaction rolls back, its
   * client was never told it committed), then one read-write commit of our own (a WAL message) flushes
   * all WAL. Returns the position every acknowledged commit lies before.
   */
  async fence(target: DatabaseTarget): Promise<{ lsn: string; terminated: number }> {
    return this.with(target, async (c) => {
      await c.query('ALTER SYSTEM SET default_transaction_read_only = on');
      await c.query('SELECT pg_reload_conf()');
      await this.waitForSetting(target, 'on');
      // In the select list, so it runs only on the rows the WHERE kept (never on our own session).
      const { rows } = await c.query<{ pid: number }>(
        `SELECT pid, pg_terminate_backend(pid) AS ended FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`,
      );
      // Until every ended session is gone (pg_terminate_backend's own wait sleeps in 100 ms steps).
      const pids = rows.map((r) => r.pid);
      const deadline = performance.now() + TERMINATE_WAIT_MS;
      while (
        pids.length > 0 &&
        (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1)', [pids])).rows[0]!.n > 0
      ) {
        if (performance.now() > deadline)
          throw new Error(`${target}: sessions still running ${TERMINATE_WAIT_MS} ms after they were ended`);
        await new Promise((r) => setTimeout(r, 2));
      }
      // A commit that wrote WAL is flushed at once (a bare xid would be committed asynchronously,
      // flushed only by the WAL writer up to 200 ms later): everything before it is flushed too.
      await c.query('BEGIN READ WRITE');
      await c.query("SELECT pg_logical_emit_message(true, 'sav3', 'switchover fence')");
      await c.query('COMMIT');
      const lsn = (await c.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]!.lsn;
      return { lsn, terminated: pids.length };
    });
  }

  async unfence(target: DatabaseTarget): Promise<void> {
    await this.with(target, async (c) => {
      await c.query('ALTER SYSTEM RESET default_transaction_read_only');
      await c.query('SELECT pg_reload_conf()');
    });
    await this.waitForSetting(target, 'off');
  }

  /** A reload is asynchronous: waits until a new session sees the setting. */
  private async waitForSetting(target: DatabaseTarget, value: 'on' | 'off'): Promise<void> {
    const deadline = performance.now() + FENCE_APPLY_MS;
    for (;;) {
      const seen = await this.with(
        target,
        async (c) => (await c.query<{ v: string }>("SELECT current_setting('default_transaction_read_only') AS v")).rows[0]!.v,
        2000,
      );
      if (seen === value) return;
      if (performance.now() > deadline)
        throw new Error(`${target}: default_transaction_read_only is still ${seen} after ${FENCE_APPLY_MS} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * Stops a fenced old primary with a fast shutdown, from SQL: the server signals its own
   * postmaster (COPY TO PROGRAM runs in the data directory; it needs a superuser or
   * pg_execute_server_program). Resolves once the node no longer answers.
   */
  async stop(target: DatabaseTarget): Promise<void> {
    let refused: string | null = null;
    await this.with(target, (c) => c.query(`COPY (SELECT 1) TO PROGRAM 'kill -INT "$(head -n 1 postmaster.pid)"'`)).catch(
      (err: unknown) => {
        // Our own session ends with the server: expected. A refusal leaves the server up.
        refused = err instanceof Error ? err.message : String(err);
      },
    );
    const deadline = performance.now() + STOP_WAIT_MS;
    while ((await this.facts(target)).ok) {
      if (performance.now() > deadline)
        throw new Error(`${target} still answers ${STOP_WAIT_MS} ms after the stop${refused ? ` (${refused})` : ''}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Waits until `target` (a standby) has replayed up to `lsn`; returns its replay position. */
  async waitForReplay(target: DatabaseTarget, lsn: string, timeoutMs: number): Promise<string> {
    return this.with(target, async (c) => {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const { rows } = await c.query<{ replay: string | null; done: boolean; paused: boolean }>(
          'SELECT pg_last_wal_replay_lsn()::text AS replay, coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS done, pg_is_wal_replay_paused() AS paused',
          [lsn],
        );
        const r = rows[0]!;
        if (r.done) return r.replay!;
        if (performance.now() > deadline)
          throw new Error(
            `${target} replayed only up to ${r.replay ?? 'nothing'} of ${lsn} within ${timeoutMs} ms${r.paused ? ' (replay is paused)' : ''}`,
          );
        await new Promise((res) => setTimeout(res, 2));
      }
    });
  }

  /**
   * pg_promote, then waits for the end of recovery; a fence left from an earlier switchover is
   * lifted first. (pg_promote's own wait polls every 100 ms; polling here every few ms saves most
   * of that from the write pause.)
   */
  async promote(target: DatabaseTarget): Promise<{ timeline: number }> {
    return this.with(
      target,
      async (c) => {
        await c.query('ALTER SYSTEM RESET default_transaction_read_only');
        await c.query('SELECT pg_reload_conf()');
        const { rows } = await c.query<{ signalled: boolean }>('SELECT pg_promote(false) AS signalled');
        if (!rows[0]?.signalled) throw new Error(`pg_promote on ${target} could not signal the promotion`);
        const deadline = performance.now() + PROMOTE_WAIT_MS;
        while ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r) {
          if (performance.now() > deadline) throw new Error(`${target} was still in recovery ${PROMOTE_WAIT_MS} ms after pg_promote`);
          await new Promise((r) => setTimeout(r, 3));
        }
        return { timeline: (await c.query<{ tli: number }>(`SELECT ${CURRENT_TIMELINE_SQL} AS tli`)).rows[0]!.tli };
      },
      PROMOTE_WAIT_MS + 5000,
    );
  }

  /**
   * Proves `target` takes writes as an instance would write: a transaction in the default mode
   * (a fenced node fails it), out of recovery, committing a WAL message (a commit that wrote WAL
   * waits for its flush, and for a synchronous standby if one is required). Bounded by
   * `timeoutMs`: a node that died or hangs fails it. Returns the commit's position and timeline.
   */
  async verifyWrites(target: DatabaseTarget, timeoutMs: number): Promise<{ lsn: string; timeline: number }> {
    return this.with(
      target,
      async (c) => {
        await c.query('BEGIN');
        const { rows } = await c.query<{ in_recovery: boolean; read_only: string }>(
          "SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') AS read_only",
        );
        if (rows[0]!.in_recovery) throw new Error(`${target} is still in recovery: it takes no writes`);
        if (rows[0]!.read_only === 'on')
          throw new Error(`${target} opens read-only transactions (default_transaction_read_only): it takes no writes`);
        await c.query("SELECT pg_logical_emit_message(true, 'sav3', 'switchover write check')");
        await c.query('COMMIT');
        const r = (await c.query<{ lsn: string; tli: number }>(`SELECT pg_current_wal_lsn()::text AS lsn, ${CURRENT_TIMELINE_SQL} AS tli`))
          .rows[0]!;
        return { lsn: r.lsn, timeline: r.tli };
      },
      timeoutMs,
    );
  }
}
