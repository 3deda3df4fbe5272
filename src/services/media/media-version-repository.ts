import type { MediaBackendName } from '../../domain.ts';
import type { PrismaClient } from '../../generated/prisma/client.ts';

/** The prefix every version's object name starts with. */
export const VERSION_PREFIX = 'v/';

/** A version's object name: `v/` and a lowercase UUID as PostgreSQL prints it, nothing else. */
export const VERSION_OBJECT_NAME = /^v\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isVersionObjectName(name: string): boolean {
  return VERSION_OBJECT_NAME.test(name);
}

export interface StoredVersion {
  id: string;
  key: string;
  size: number;
  sha256: string;
  contentType: string;
  backends: MediaBackendName[];
  replaced: boolean;
}

export interface OutboxTask extends StoredVersion {
  taskId: string;
  target: MediaBackendName;
  /** Claims of this row so far, this one included. */
  attempts: number;
  /** Definitive failures so far (content missing or corrupt on every backend that should hold it). */
  failures: number;
}

/** Why an outbox row was retired without a copy. */
export type RetireReason = 'replaced' | 'content_missing' | 'target_not_configured';

export interface OutboxStats {
  /** Rows waiting. */
  backlog: number;
  /**
   * Age of the oldest acknowledged version not yet on its copy target: the oldest waiting row, or
   * a retired one whose version is still current and still missing on the target.
   */
  oldestAgeSeconds: number;
  /** Waiting rows that keep failing (three attempts or more) or have waited longer than a minute. */
  stuck: number;
  /** Retired rows whose version is still current and still missing on the target (a sync copies them). */
  retired: number;
}

/** Versions and the outbox, for the continuous backup, sync, garbage collection and verification. */
export interface MediaVersionRepository {
  /**
   * Leases up to `limit` due outbox tasks for `leaseMs` under `token`, oldest first, skipping those
   * whose target is in `down` or whose every holder is (a row waiting on a dead backend is not
   * tried, and blocks nothing). A crashed holder's lease, or a lease whose answer was lost with the
   * connection, simply expires.
   */
  claimOutbox(limit: number, leaseMs: number, token: string, down?: MediaBackendName[]): Promise<OutboxTask[]>;
  /** Extends the lease of the rows `token` still holds (its holder is alive and copying). */
  renewOutbox(token: string, taskIds: string[], leaseMs: number): Promise<void>;
  /** Records a finished copy and clears its outbox rows; false when the version no longer exists. */
  completeCopy(version: string, target: MediaBackendName): Promise<boolean>;
  /** Reschedules a row `token` holds after `delayMs`; a definitive failure is counted. */
  retryOutbox(taskId: string, token: string, error: string, delayMs: number, definitive?: boolean): Promise<void>;
  /** Retires a row without a copy, recording why (only while `token` holds it); false when it was gone. */
  retireOutbox(taskId: string, token: string, reason: RetireReason, error?: string): Promise<boolean>;
  outboxStats(): Promise<OutboxStats>;
  /** Forgets retired rows older than `maxAgeMs`. */
  purgeRetired(maxAgeMs: number): Promise<number>;
  /** Current versions (referenced by a key) not yet on `target`, in key order after `afterKey`. */
  currentMissingOn(target: MediaBackendName, afterKey: string, limit: number): Promise<StoredVersion[]>;
  /** Current versions in key order after `afterKey` (verification). */
  current(afterKey: string, limit: number): Promise<StoredVersion[]>;
  /** Current versions already copied to `target` (its name in their backends), in key order after `afterKey`. */
  currentOn(target: MediaBackendName, afterKey: string, limit: number): Promise<StoredVersion[]>;
  countLegacy(): Promise<number>;
  /** Deletes version rows replaced longer than `graceMs` ago and returns them (their content goes next). */
  collect(graceMs: number, limit: number): Promise<StoredVersion[]>;
  /** Removes tombstones of keys deleted longer than `graceMs` ago. */
  purgeTombstones(graceMs: number): Promise<number>;
  /**
   * Which of these object names (listed under `v/`) a row references: a version row (for names
   * `v/<uuid>`), or an old-layout row or pending old-layout garbage entry named exactly so (an
   * earlier release stored content under the user's key, which may look like `v/<uuid>`). Names
   * that are not `v/<uuid>` never reach a uuid cast.
   */
  referenced(names: string[]): Promise<Set<string>>;
  /**
   * `backend` was found not to hold `version` intact (missing, wrong size or wrong sha256): it is
   * removed from the version's backends and an outbox row copies the version there again (the
   * backlog and RPO exposure count it until then). False when the version does not list `backend`.
   */
  markBad(version: string, backend: MediaBackendName): Promise<boolean>;
  /**
   * Old-layout objects (named by their key) whose key was deleted or overwritten longer than
   * `graceMs` ago; `referenced` when a row still names that object now (a live old-layout row for
   * the key, or a version of that name): such an object must be kept.
   */
  legacyGarbage(graceMs: number, limit: number): Promise<{ key: string; referenced: boolean }[]>;
  /** Forgets old-layout garbage entries (their objects removed or still referenced), unless renewed within `graceMs`. */
  dropLegacyGarbage(keys: string[], graceMs: number): Promise<void>;
}

interface Row {
  id: string;
  key: string;
  size: bigint | number;
  sha256: string;
  content_type: string;
  backends: string[];
  replaced: boolean;
}

function toVersion(r: Row): StoredVersion {
  return {
    id: r.id,
    key: r.key,
    size: Number(r.size),
    sha256: r.sha256.trim(),
    contentType: r.content_type,
    backends: r.backends as MediaBackendName[],
    replaced: r.replaced,
  };
}

const COLUMNS = `v.id::text AS id, v.key, v.size, v.sha256, v.content_type, v.backends, EXISTS (SELECT 1 FROM media_replaced r WHERE r.version = v.id) AS replaced`;

export class PrismaMediaVersionRepository implements MediaVersionRepository {
  constructor(private readonly prisma: () => PrismaClient) {}

  async claimOutbox(limit: number, leaseMs: number, token: string, down: MediaBackendName[] = []): Promise<OutboxTask[]> {
    const rows = await this.prisma().$queryRawUnsafe<(Row & { task_id: bigint; target: string; attempts: number; failures: number })[]>(
      `WITH due AS (
         SELECT o.id FROM media_outbox o JOIN media_versions v ON v.id = o.version
         WHERE o.lease_until <= now() AND NOT (o.target = ANY($4::text[])) AND NOT (v.backends <@ $4::text[])
         ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED),
       leased AS (
         UPDATE media_outbox o SET lease_until = now() + make_interval(secs => $2::double precision / 1000), attempts = o.attempts + 1,
           claim_token = $3::uuid
         FROM due WHERE o.id = due.id RETURNING o.id, o.version, o.target, o.attempts, o.failures)
       SELECT l.id AS task_id, l.target, l.attempts, l.failures, ${COLUMNS}
       FROM leased l JOIN media_versions v ON v.id = l.version ORDER BY l.id`,
      limit,
      leaseMs,
      token,
      down,
    );
    return rows.map((r) => ({
      ...toVersion(r),
      taskId: String(r.task_id),
      target: r.target as MediaBackendName,
      attempts: r.attempts,
      failures: r.failures,
    }));
  }

  async renewOutbox(token: string, taskIds: string[], leaseMs: number): Promise<void> {
    if (taskIds.length === 0) return;
    await this.prisma().$executeRawUnsafe(
      `UPDATE media_outbox SET lease_until = now() + make_interval(secs => $3::double precision / 1000)
       WHERE id = ANY($2::bigint[]) AND claim_token = $1::uuid`,
      token,
      taskIds,
      leaseMs,
    );
  }

  async completeCopy(version: string, target: MediaBackendName): Promise<boolean> {
    const rows = await this.prisma().$queryRawUnsafe<{ found: number }[]>(
      `WITH upd AS (
         UPDATE media_versions SET backends = CASE WHEN $2::text = ANY(backends) THEN backends ELSE array_append(backends, $2::text) END
         WHERE id = $1::uuid RETURNING id),
       del AS (DELETE FROM media_outbox WHERE version = $1::uuid AND target = $2::text)
       SELECT count(*)::int AS found FROM upd`,
      version,
      target,
    );
    return rows[0]!.found > 0;
  }

  async retryOutbox(taskId: string, token: string, error: string, delayMs: number, definitive = false): Promise<void> {
    await this.prisma().$executeRawUnsafe(
      `UPDATE media_outbox SET lease_until = now() + make_interval(secs => $3::double precision / 1000), last_error = $4,
         claim_token = NULL, failures = failures + $5::int
       WHERE id = $1::bigint AND claim_token = $2::uuid`,
      taskId,
      token,
      delayMs,
      error.slice(0, 500),
      definitive ? 1 : 0,
    );
  }

  async retireOutbox(taskId: string, token: string, reason: RetireReason, error?: string): Promise<boolean> {
    const rows = await this.prisma().$queryRawUnsafe<{ id: bigint }[]>(
      `WITH gone AS (DELETE FROM media_outbox WHERE id = $1::bigint AND claim_token = $2::uuid
         RETURNING id, version, target, attempts, COALESCE($4::text, last_error) AS last_error, created_at)
       INSERT INTO media_outbox_retired (id, version, key, target, reason, attempts, last_error, created_at)
       SELECT g.id, g.version, COALESCE(v.key, ''), g.target, $3::text, g.attempts, left(g.last_error, 500), g.created_at
       FROM gone g LEFT JOIN media_versions v ON v.id = g.version
       ON CONFLICT (id) DO NOTHING
       RETURNING id`,
      taskId,
      token,
      reason,
      error ?? null,
    );
    return rows.length > 0;
  }

  async outboxStats(): Promise<OutboxStats> {
    const rows = await this.prisma().$queryRawUnsafe<{ backlog: number; stuck: number; retired: number; age: number | null }[]>(
      `WITH waiting AS (
         SELECT count(*)::int AS backlog,
           count(*) FILTER (WHERE (attempts >= 3 AND last_error IS NOT NULL) OR created_at < now() - interval '60 seconds')::int AS stuck,
           min(created_at) AS oldest
         FROM media_outbox),
       unresolved AS (
         SELECT count(*)::int AS retired, min(r.created_at) AS oldest
         FROM media_outbox_retired r JOIN media_versions v ON v.id = r.version
         WHERE r.reason <> 'replaced' AND NOT (r.target = ANY(v.backends))
           AND EXISTS (SELECT 1 FROM media_objects o WHERE o.key = r.key AND o.version = r.version))
       SELECT w.backlog, w.stuck, u.retired, EXTRACT(EPOCH FROM (now() - LEAST(w.oldest, u.oldest)))::float8 AS age
       FROM waiting w, unresolved u`,
    );
    const r = rows[0]!;
    return { backlog: r.backlog, stuck: r.stuck, retired: r.retired, oldestAgeSeconds: Math.max(0, r.age ?? 0) };
  }

  async purgeRetired(maxAgeMs: number): Promise<number> {
    return this.prisma().$executeRawUnsafe(
      `DELETE FROM media_outbox_retired WHERE retired_at < now() - make_interval(secs => $1::double precision / 1000)`,
      maxAgeMs,
    );
  }

  async currentMissingOn(target: MediaBackendName, afterKey: string, limit: number): Promise<StoredVersion[]> {
    const rows = await this.prisma().$queryRawUnsafe<Row[]>(
      `SELECT ${COLUMNS} FROM media_objects o JOIN media_versions v ON v.id = o.version
       WHERE o.key COLLATE "C" > $1 AND NOT ($2::text = ANY(v.backends)) ORDER BY o.key COLLATE "C" LIMIT $3`,
      afterKey,
      target,
      limit,
    );
    return rows.map(toVersion);
  }

  async currentOn(target: MediaBackendName, afterKey: string, limit: number): Promise<StoredVersion[]> {
    const rows = await this.prisma().$queryRawUnsafe<Row[]>(
      `SELECT ${COLUMNS} FROM media_objects o JOIN media_versions v ON v.id = o.version
       WHERE o.key COLLATE "C" > $1 AND $2::text = ANY(v.backends) ORDER BY o.key COLLATE "C" LIMIT $3`,
      afterKey,
      target,
      limit,
    );
    return rows.map(toVersion);
  }

  async current(afterKey: string, limit: number): Promise<StoredVersion[]> {
    const rows = await this.prisma().$queryRawUnsafe<Row[]>(
      `SELECT ${COLUMNS} FROM media_objects o JOIN media_versions v ON v.id = o.version
       WHERE o.key COLLATE "C" > $1 ORDER BY o.key COLLATE "C" LIMIT $2`,
      afterKey,
      limit,
    );
    return rows.map(toVersion);
  }

  async countLegacy(): Promise<number> {
    const rows = await this.prisma().$queryRawUnsafe<{ n: number }[]>(
      `SELECT count(*)::int AS n FROM media_objects WHERE version IS NULL AND deleted_at IS NULL`,
    );
    return rows[0]!.n;
  }

  async collect(graceMs: number, limit: number): Promise<StoredVersion[]> {
    const rows = await this.prisma().$queryRawUnsafe<Row[]>(
      `WITH gone AS (
         SELECT version FROM media_replaced
         WHERE at < now() - make_interval(secs => $1::double precision / 1000)
         ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)
       DELETE FROM media_versions v USING gone WHERE v.id = gone.version
       RETURNING v.id::text AS id, v.key, v.size, v.sha256, v.content_type, v.backends, true AS replaced`,
      graceMs,
      limit,
    );
    return rows.map(toVersion);
  }

  async purgeTombstones(graceMs: number): Promise<number> {
    return this.prisma().$executeRawUnsafe(
      `DELETE FROM media_objects WHERE deleted_at < now() - make_interval(secs => $1::double precision / 1000)`,
      graceMs,
    );
  }

  async legacyGarbage(graceMs: number, limit: number): Promise<{ key: string; referenced: boolean }[]> {
    return this.prisma().$queryRawUnsafe<{ key: string; referenced: boolean }[]>(
      `SELECT g.key,
         EXISTS (SELECT 1 FROM media_objects o WHERE o.key = g.key AND o.version IS NULL AND o.deleted_at IS NULL)
         OR CASE WHEN g.key ~ '^v/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
             THEN EXISTS (SELECT 1 FROM media_versions v WHERE v.id = substr(g.key, 3)::uuid) ELSE false END AS referenced
       FROM media_legacy_garbage g
       WHERE g.at < now() - make_interval(secs => $1::double precision / 1000)
       ORDER BY g.at LIMIT $2`,
      graceMs,
      limit,
    );
  }

  async dropLegacyGarbage(keys: string[], graceMs: number): Promise<void> {
    if (keys.length === 0) return;
    await this.prisma().$executeRawUnsafe(
      `DELETE FROM media_legacy_garbage WHERE key = ANY($1::text[]) AND at < now() - make_interval(secs => $2::double precision / 1000)`,
      keys,
      graceMs,
    );
  }

  async referenced(names: string[]): Promise<Set<string>> {
    if (names.length === 0) return new Set();
    const ids = names.filter((n) => isVersionObjectName(n)).map((n) => n.slice(2));
    const rows = await this.prisma().$queryRawUnsafe<{ name: string }[]>(
      `SELECT 'v/' || id::text AS name FROM media_versions WHERE id = ANY($1::uuid[])
       UNION SELECT key AS name FROM media_objects WHERE version IS NULL AND key = ANY($2::text[])
       UNION SELECT key AS name FROM media_legacy_garbage WHERE key = ANY($2::text[])`,
      ids,
      names,
    );
    return new Set(rows.map((r) => r.name));
  }

  async markBad(version: string, backend: MediaBackendName): Promise<boolean> {
    const rows = await this.prisma().$queryRawUnsafe<{ id: string }[]>(
      `WITH upd AS (
         UPDATE media_versions SET backends = array_remove(backends, $2::text)
         WHERE id = $1::uuid AND $2::text = ANY(backends) RETURNING id),
       ins AS (
         INSERT INTO media_outbox (version, target)
         SELECT id, $2::text FROM upd
         WHERE NOT EXISTS (SELECT 1 FROM media_outbox o WHERE o.version = $1::uuid AND o.target = $2::text))
       SELECT id::text AS id FROM upd`,
      version,
      backend,
    );
    return rows.length > 0;
  }
}
