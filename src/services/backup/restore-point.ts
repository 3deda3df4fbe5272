import pg from 'pg';
import { withTimeout } from '../../lib/with-timeout.ts';
import { errorMessage } from '../../lib/error-message.ts';

export const RESTORE_POINT_NAME = /^[A-Za-z0-9._:-]{1,63}$/;

export interface RestorePoint {
  name: string;
  lsn: string;
  createdAt: string;
}

/** `pg_create_restore_point` on a connection of its own, bounded; names a point to recover to. */
export async function createRestorePoint(connectionString: string, name: string, timeoutMs: number): Promise<RestorePoint> {
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'sav3-restore-point',
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ lsn: string }>('SELECT pg_create_restore_point($1)::text AS lsn', [name]);
    return { name, lsn: rows[0]!.lsn, createdAt: new Date().toISOString() };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A generated name: `<reason>-20261126T081500123Z` (sortable, unique per millisecond). */
export function restorePointName(reason: string, at = new Date()): string {
  return `${reason}-${at.toISOString().replace(/[-:.]/g, '')}`.slice(0, 63);
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
      createRestorePoint(connectionString, restorePointName(reason), timeoutMs),
      timeoutMs + 200,
      `no answer within ${timeoutMs} ms`,
      { unref: true },
    );
  } catch (err) {
    return { error: errorMessage(err) };
  }
}
