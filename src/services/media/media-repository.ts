import { WAITS_FOR_SYNC_STANDBY_SQL } from '../../adapters/pg-connection.ts';
import type { MediaBackendName } from '../../domain.ts';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import { poolOf } from '../../adapters/database-clients.ts';
import { WriteFencedError } from '../write-gate/write-gate.ts';

export interface MediaMetadata {
  key: string;
  size: number;
  sha256: string;
  contentType: string;
  /** The backend the version was written to. */
  backend: MediaBackendName;
  createdAt: Date;
  /** The immutable version holding the content; null for an object of the old layout (content under the key). */
  version: string | null;
  /** Backends the content is known to be complete on. */
  backends: MediaBackendName[];
  /** Write order of the pointer; caches keep only the highest. */
  seq: number;
}

/** A write to commit: content already stored, completely, under `version` on `backend`. */
export interface WriteCommit {
  key: string;
  version: string;
  size: number;
  sha256: string;
  contentType: string;
  backend: MediaBackendName;
  createdAt: Date;
  /** Backends the continuous backup must copy the version to (outbox rows, same transaction). */
  copyTo: MediaBackendName[];
  /**
   * The commit is refused after this instant: unreferenced content older than the GC grace period
   * is removed, so a commit must not come so late that its content may be gone.
   */
  commitBy: Date;
  /**
   * The DR state version the client write was admitted under: the commit is refused (nothing
   * changed, WriteFencedError) when the database write fence was raised above it. Undefined for
   * work outside a client write (background jobs), which the fence does not hold back.
   */
  fenceEpoch?: number;
}

/** A commit refused because it came after its deadline; nothing was changed. */
export class CommitTooLateError extends Error {
  /** Nothing was applied (the write gate answers it as it is, even for a commit a barrier gave up on). */
  readonly nothingChanged = true;
  constructor() {
    super('the write reached its commit deadline before it could be committed');
  }
}

/** The object name of a version: never the user's key, never written twice. */
export function versionObjectName(version: string): string {
  return `v/${version}`;
}

export function objectName(meta: Pick<MediaMetadata, 'key' | 'version'>): string {
  return meta.version ? versionObjectName(meta.version) : meta.key;
}

/** Media metadata: the only mutable pointer (key -> version), changed in transactions. */
export interface MediaRepository {
  find(key: string): Promise<MediaMetadata | undefined>;
  /** The commit point of a write: records the version and moves the pointer to it, in one statement. */
  commitWrite(write: WriteCommit): Promise<MediaMetadata>;
  /**
   * Removes the pointer (the version is garbage after the grace period); the new seq, or undefined
   * when absent. `fenceEpoch`: as WriteCommit.fenceEpoch.
   */
  commitDelete(key: string, fenceEpoch?: number): Promise<number | undefined>;
  /** Whether a version was committed: resolves a commit whose answer was lost with the connection. */
  /**
   * Whether the version's commit was applied: undefined when that cannot be told yet (a commit
   * waiting for a synchronous standby is applied but not visible until the standby answers).
   */
  versionCommitted(version: string): Promise<boolean | undefined>;
  list(prefix: string, limit: number, after?: string): Promise<MediaMetadata[]>;
}

/** A bigint column: bigint through Prisma, a decimal string through pg. */
type Numeric = bigint | number | string;

interface Row {
  key: string;
  size: Numeric;
  sha256: string;
  content_type: string;
  backend: string;
  created_at: Date;
  version: string | null;
  seq: Numeric;
  backends: string[] | null;
}

function toMeta(row: Row): MediaMetadata {
  return {
    key: row.key,
    size: Number(row.size),
    sha256: row.sha256.trim(),
    contentType: row.content_type,
    backend: row.backend as MediaBackendName,
    createdAt: row.created_at,
    version: row.version,
    backends: (row.backends ?? [row.backend]) as MediaBackendName[],
    seq: Number(row.seq),
  };
}

const SELECT = `SELECT o.key, o.size, o.sha256, o.content_type, o.backend, o.created_at, o.version::text AS version, o.seq,
  COALESCE(v.backends, ARRAY[o.backend]) AS backends
  FROM media_objects o LEFT JOIN media_versions v ON v.id = o.version`;

/**
 * The commit of a write, one statement: record the version, move the pointer, note the version
 * it replaces, queue the backup copies. ON CONFLICT DO UPDATE locks the key's row and works on its
 * latest committed state, so `prev_version` is exactly the version replaced, and `seq`, drawn
 * under that lock, follows the order of commits (a deleted key keeps a tombstone row for this).
 * Nothing happens after the deadline ($9). A key that held an object of the old layout (content
 * under the key, no version) leaves that object to the garbage collector (`leg`): read from the
 * statement's snapshot, which cannot miss one, since no write creates an old-layout row; the
 * collector checks again that nothing references the object before it removes it.
 *
 * The database write fence ($10, see checkFence): nothing happens either once the fence epoch is above
 * the DR state version the write was admitted under.
 *
 * The statement is the body of the function media_commit_write (migration
 * 20261126233000_media_commit_write_function), unchanged: planned once per server session
 * instead of on every upload (the planning was most of PostgreSQL's CPU per commit), which holds
 * behind PgBouncer in transaction mode, unlike a named prepared statement. A change to the
 * statement is a new migration that replaces the function.
 */
const COMMIT_WRITE = `SELECT commit_seq AS seq, fence_epoch AS fence FROM media_commit_write(
  $1::text, $2::uuid, $3::bigint, $4::text, $5::text, $6::text, $7::timestamptz, $8::text[], $9::timestamptz, $10::bigint, $11::text)`;

const COMMIT_DELETE = `WITH
  fence AS (SELECT epoch FROM dr_write_fence WHERE scope = $3::text FOR SHARE),
  del AS (UPDATE media_objects SET deleted_at = now(), updated_at = now(), prev_version = version, version = NULL, seq = nextval('media_write_seq')
          WHERE key = $1::text AND deleted_at IS NULL AND EXISTS (SELECT 1 FROM fence WHERE $2::bigint IS NULL OR fence.epoch <= $2::bigint)
          RETURNING seq, prev_version),
  rep AS (INSERT INTO media_replaced (version) SELECT prev_version FROM del WHERE prev_version IS NOT NULL ON CONFLICT DO NOTHING),
  leg AS (INSERT INTO media_legacy_garbage (key) SELECT $1::text FROM del WHERE prev_version IS NULL ON CONFLICT (key) DO UPDATE SET at = now())
  SELECT (SELECT seq FROM del) AS seq, (SELECT epoch FROM fence) AS fence`;

/**
 * The database write fence (migration dr_write_fence): every client write's commit statement takes
 * FOR SHARE on its scope's row (one per DR state) and changes nothing when its epoch is above the
 * DR state version the write was admitted under. A write-relevant DR change raises the epoch (UPDATE, see
 * WriteFenceRaiser) before it answers: the UPDATE waits for the commits holding the share lock, so
 * those finished before the answer; every commit after it is refused. Unlike the instance's own
 * write gate, this holds for an instance whose timers did not run (paused process, GC, CPU steal).
 */
function checkFence(fence: Numeric | null, admitted: number | undefined): void {
  if (admitted !== undefined && Number(fence) > admitted)
    throw new WriteFencedError(
      `the DR state changed (version ${Number(fence)}) after this write was admitted (version ${admitted}): the database write fence refused its commit; it was not saved`,
    );
}

export class PrismaMediaRepository implements MediaRepository {
  constructor(
    /** Called per query so that a database switch takes effect on the next request. */
    private readonly prisma: () => PrismaClient,
    /** The write fence's scope: the DR state this service follows (its Redis key prefix). */
    private readonly fenceScope = 'sav3:',
  ) {}

  /**
   * One statement on the client's pg pool when it has one (createPrisma), else through Prisma:
   * the same connections, without Prisma's per-query work (about 0.7 ms of CPU per commit against
   * 0.25 ms for the pg driver alone, measured with `npm run bench:media`).
   */
  private async query<T>(sql: string, ...args: unknown[]): Promise<T[]> {
    const client = this.prisma();
    const pool = poolOf(client);
    if (pool) return (await pool.query(sql, args)).rows as T[];
    return client.$queryRawUnsafe<T[]>(sql, ...args);
  }

  /**
   * Runs a commit statement; when its scope has no fence row yet (nothing was locked, so a first
   * raise would not wait for it), creates the row (epoch 0) and runs the statement again.
   */
  private async fenced(sql: string, ...args: unknown[]): Promise<{ seq: Numeric | null; fence: Numeric | null }> {
    for (let attempt = 0; ; attempt += 1) {
      const rows = await this.query<{ seq: Numeric | null; fence: Numeric | null }>(sql, ...args);
      const row = rows[0] ?? { seq: null, fence: null };
      if (row.fence !== null || attempt > 0) return row;
      await this.query(`INSERT INTO dr_write_fence (scope, epoch) VALUES ($1, 0) ON CONFLICT (scope) DO NOTHING`, this.fenceScope);
    }
  }

  async find(key: string): Promise<MediaMetadata | undefined> {
    const rows = await this.query<Row>(`${SELECT} WHERE o.key = $1 AND o.deleted_at IS NULL`, key);
    return rows[0] ? toMeta(rows[0]) : undefined;
  }

  async commitWrite(w: WriteCommit): Promise<MediaMetadata> {
    const row = await this.fenced(
      COMMIT_WRITE,
      w.key,
      w.version,
      BigInt(w.size),
      w.sha256,
      w.contentType,
      w.backend,
      w.createdAt,
      w.copyTo,
      w.commitBy,
      w.fenceEpoch ?? null,
      this.fenceScope,
    );
    if (row.seq === null) {
      checkFence(row.fence, w.fenceEpoch);
      throw new CommitTooLateError();
    }
    return {
      key: w.key,
      size: w.size,
      sha256: w.sha256,
      contentType: w.contentType,
      backend: w.backend,
      createdAt: w.createdAt,
      version: w.version,
      backends: [w.backend],
      seq: Number(row.seq),
    };
  }

  async commitDelete(key: string, fenceEpoch?: number): Promise<number | undefined> {
    const row = await this.fenced(COMMIT_DELETE, key, fenceEpoch ?? null, this.fenceScope);
    if (row.seq === null) {
      checkFence(row.fence, fenceEpoch);
      return undefined;
    }
    return Number(row.seq);
  }

  async versionCommitted(version: string): Promise<boolean | undefined> {
    const rows = await this.query<{ found: boolean; waiting: boolean; unreplicated: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM media_versions WHERE id = $1::uuid) AS found,
              EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep') AS waiting,
              (NOT pg_is_in_recovery() AND ${WAITS_FOR_SYNC_STANDBY_SQL}
                AND NOT EXISTS (SELECT 1 FROM pg_stat_replication
                                 WHERE sync_state IN ('sync', 'quorum') AND flush_lsn >= pg_current_wal_flush_lsn())) AS unreplicated`,
      version,
    );
    const r = rows[0];
    // Visible where commits wait for a synchronous standby, but that wait may have been cut short
    // (a cancel or a terminated session keeps the commit locally): applied only once a synchronous
    // standby holds everything written; until then, unknown.
    if (r?.found) return r.unreplicated ? undefined : true;
    // Not visible, but a commit waiting for a synchronous standby may be this one.
    return r?.waiting ? undefined : false;
  }

  /**
   * Keys starting with `prefix`, literally: a byte-order range (keys are ASCII below 0x7f) that
   * the "C"-collation index answers, whatever the database's collation.
   */
  async list(prefix: string, limit: number, after?: string): Promise<MediaMetadata[]> {
    const from = after !== undefined && after >= prefix ? after : prefix;
    const op = after !== undefined && after >= prefix ? '>' : '>=';
    const rows = await this.query<Row>(
      `${SELECT} WHERE o.key COLLATE "C" ${op} $1 AND o.key COLLATE "C" < $2 AND o.deleted_at IS NULL ORDER BY o.key COLLATE "C" LIMIT $3`,
      from,
      `${prefix}\x7f`,
      limit,
    );
    return rows.map(toMeta);
  }
}
