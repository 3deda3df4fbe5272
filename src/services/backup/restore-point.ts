import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { withTimeout } from '../../lib/with-timeout.ts';
import { errorMessage } from '../../lib/error-message.ts';

export const RESTORE_POINT_NAME = /^[A-Za-z0-9._:-]{1,63}$/;

export interface RestorePoint {
  name: string;
  lsn: string;
  createdAt: string;
  /** false: the `restore_points` table does not exist yet (migrations not applied): the name was not checked. */
  recorded?: false;
}

/** A restore point of that name was already created (recorded in `restore_points`). */
export class RestorePointExistsError extends Error {
  constructor(readonly pointName: string) {
    super(`a restore point named ${pointName} already exists: recovery to a name stops at its first point; choose another name`);
  }
}

/** The few calls of pg.Client the recording needs (a connection of the caller's, outside a transaction). */
type Queryable = Pick<pg.Client, 'query'>;

/**
 * Records the name in `restore_points` (committed), then writes `pg_create_restore_point(name)`.
 * PostgreSQL keeps no catalog of restore points and accepts a name twice, while recovery to a name
 * stops at its first point: the table's primary key refuses a used name (RestorePointExistsError),
 * also between concurrent requests. The row is committed BEFORE the point is written, so that a
 * recovery to the point keeps it (committed after, the restored database would not know the name
 * and would take it again: a second point of the name, which recovery to it never reaches); it is
 * removed again when the point cannot be written. Where the table does not exist yet (the very first
 * migration run) the point is created unrecorded (as on a server that refuses the insert as
 * read-only: the point itself then fails with PostgreSQL's own reason).
 */
export async function writeRestorePoint(client: Queryable, name: string, by: string): Promise<RestorePoint> {
  try {
    await client.query('INSERT INTO restore_points (name, created_by) VALUES ($1, $2)', [name, by]);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '23505') throw new RestorePointExistsError(name);
    // 42P01: no table yet (first migration run). 25006: a read-only transaction (a standby): the
    // point itself then fails with PostgreSQL's own reason (55000 recovery is in progress).
    if (code !== '42P01' && code !== '25006') throw err;
    // Read-only (a primary fenced with default_transaction_read_only, which still writes WAL): the
    // name cannot be recorded, but a used one is still refused (found by an outside attack: a
    // second point of a name made the first unreachable by name).
    if (code === '25006') {
      const used = await client.query('SELECT 1 FROM restore_points WHERE name = $1', [name]).catch(() => ({ rows: [] }));
      if (used.rows.length > 0) throw new RestorePointExistsError(name);
    }
    const { rows } = await client.query<{ lsn: string }>('SELECT pg_create_restore_point($1)::text AS lsn', [name]);
    return { name, lsn: rows[0]!.lsn, createdAt: new Date().toISOString(), recorded: false };
  }
  let lsn: string;
  try {
    const { rows } = await client.query<{ lsn: string }>('SELECT pg_create_restore_point($1)::text AS lsn', [name]);
    lsn = rows[0]!.lsn;
  } catch (err) {
    // No point was written: the name is free again (a connection lost here leaves the row: the
    // name stays refused, never a second point of it).
    await client.query('DELETE FROM restore_points WHERE name = $1 AND lsn IS NULL', [name]).catch(() => undefined);
    throw err;
  }
  // Only for the listing: a recovery to the point itself keeps the row with lsn null.
  await client.query('UPDATE restore_points SET lsn = $2 WHERE name = $1', [name, lsn]).catch(() => undefined);
  return { name, lsn, createdAt: new Date().toISOString() };
}

/** `pg_create_restore_point` on a connection of its own, bounded; names a point to recover to. */
export async function createRestorePoint(connectionString: string, name: string, timeoutMs: number, by = 'system'): Promise<RestorePoint> {
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'sav3-restore-point',
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await writeRestorePoint(client, name, by);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A generated name: `<reason>-20261126T081500123Z` (sortable, unique per millisecond). */
export function restorePointName(reason: string, at = new Date()): string {
  return `${reason}-${at.toISOString().replace(/[-:.]/g, '')}`.slice(0, 63);
}

/**
 * A generated point's name may be taken (two instances in the same millisecond, a clock set
 * back): then once more with a random suffix, never a second point of the same name.
 */
export async function writeGeneratedRestorePoint(
  write: (name: string) => Promise<RestorePoint>,
  reason: string,
  at = new Date(),
): Promise<RestorePoint> {
  const name = restorePointName(reason, at);
  try {
    return await write(name);
  } catch (err) {
    if (!(err instanceof RestorePointExistsError)) throw err;
    const suffix = `-${randomBytes(3).toString('hex')}`;
    return write(`${name.slice(0, 63 - suffix.length)}${suffix}`);
  }
}

/**
 * Best effort before a DR change: a restore point on the given server, or why there is none (the
 * primary may be the thing that failed). Never throws, never waits longer than the bound.
 */
export async function restorePointBefore(
  connectionString: string | undefined,
  reason: string,
  timeoutMs = 2000,
): Promise<RestorePoint | { error: string }> {
  if (!connectionString) return { error: 'no database configured' };
  try {
    return await withTimeout(
      writeGeneratedRestorePoint((name) => createRestorePoint(connectionString, name, timeoutMs, `system:${reason}`), reason),
      timeoutMs + 200,
      `no answer within ${timeoutMs} ms`,
      { unref: true },
    );
  } catch (err) {
    return { error: errorMessage(err) };
  }
}
