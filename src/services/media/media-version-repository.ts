import type { MediaBackendName } from '../../domain.ts';
import type { PrismaClient } from '../../generated/prisma/client.ts';

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
  attempts: number;
}

/** Versions and the outbox, for the continuous backup, sync, garbage collection and verification. */
export interface MediaVersionRepository {
  /** Leases up to `limit` due outbox tasks for `leaseMs`; a crashed holder's lease simply expires. */
  claimOutbox(limit: number, leaseMs: number): Promise<OutboxTask[]>;
  /** Records a finished copy and clears its outbox rows; false when the version no longer exists. */
  completeCopy(version: string, target: MediaBackendName): Promise<boolean>;
  retryOutbox(taskId: string, error: string, delayMs: number): Promise<void>;
  dropOutbox(taskId: string): Promise<void>;
  outboxStats(): Promise<{ backlog: number; oldestAgeSeconds: number }>;
  /** Current versions (referenced by a key) not yet on `target`, in key order after `afterKey`. */
  currentMissingOn(target: MediaBackendName, afterKey: string, limit: number): Promise<StoredVersion[]>;
  /** Current versions in key order after `afterKey` (verification). */
  current(afterKey: string, limit: number): Promise<StoredVersion[]>;
  countLegacy(): Promise<number>;
  /** Deletes version rows replaced longer than `graceMs` ago and returns them (their content goes next). */
  collect(graceMs: number, limit: number): Promise<StoredVersion[]>;
  /** Removes tombstones of keys deleted longer than `graceMs` ago. */
  purgeTombstones(graceMs: number): Promise<number>;
  /** Which of these version ids have a row. */
  existing(ids: string[]): Promise<Set<string>>;
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

  async claimOutbox(limit: number, leaseMs: number): Promise<OutboxTask[]> {
    const rows = await this.prisma().$queryRawUnsafe<(Row & { task_id: bigint; target: string; attempts: number })[]>(
      `WITH due AS (
         SELECT id FROM media_outbox WHERE lease_until <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),
       leased AS (
         UPDATE media_outbox o SET lease_until = now() + make_interval(secs => $2::double precision / 1000), attempts = o.attempts + 1
         FROM due WHERE o.id = due.id RETURNING o.id, o.version, o.target, o.attempts)
       SELECT l.id AS task_id, l.target, l.attempts, ${COLUMNS}
       FROM leased l JOIN media_versions v ON v.id = l.version ORDER BY l.id`,
      limit,
      leaseMs,
    );
    return rows.map((r) => ({ ...toVersion(r), taskId: String(r.task_id), target: r.target as MediaBackendName, attempts: r.attempts }));
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

  async retryOutbox(taskId: string, error: string, delayMs: number): Promise<void> {
    await this.prisma().$executeRawUnsafe(
      `UPDATE media_outbox SET lease_until = now() + make_interval(secs => $2::double precision / 1000), last_error = $3 WHERE id = $1::bigint`,
      taskId,
      delayMs,
      error.slice(0, 500),
    );
  }

  async dropOutbox(taskId: string): Promise<void> {
    await this.prisma().$executeRawUnsafe(`DELETE FROM media_outbox WHERE id = $1::bigint`, taskId);
  }

  async outboxStats(): Promise<{ backlog: number; oldestAgeSeconds: number }> {
    const rows = await this.prisma().$queryRawUnsafe<{ backlog: number; age: number | null }[]>(
      `SELECT count(*)::int AS backlog, EXTRACT(EPOCH FROM (now() - min(created_at)))::float8 AS age FROM media_outbox`,
    );
    return { backlog: rows[0]!.backlog, oldestAgeSeconds: Math.max(0, rows[0]!.age ?? 0) };
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
         OR (g.key ~ '^v/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
             AND EXISTS (SELECT 1 FROM media_versions v WHERE v.id = substr(g.key, 3)::uuid)) AS referenced
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

  async existing(ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await this.prisma().$queryRawUnsafe<{ id: string }[]>(
      `SELECT id::text AS id FROM media_versions WHERE id = ANY($1::uuid[])`,
      ids,
    );
    return new Set(rows.map((r) => r.id));
  }
}
