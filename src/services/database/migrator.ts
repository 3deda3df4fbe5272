import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { writeGeneratedRestorePoint, writeRestorePoint } from '../backup/restore-point.ts';

/** The advisory lock `prisma migrate deploy` takes, so this runner and Prisma's exclude each other. */
export const PRISMA_MIGRATE_LOCK = 72707369;

export interface MigrationFile {
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: string[];
  /** Applied migrations whose file changed since (Prisma warns about these too). */
  modified: string[];
  /** Created before the first pending migration ran: a point to recover to if one goes wrong. */
  restorePoint?: { name: string; lsn: string } | { error: string };
}

export async function readMigrations(dir: string): Promise<MigrationFile[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  return Promise.all(
    names.map(async (name) => {
      const sql = await readFile(join(dir, name, 'migration.sql'), 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    }),
  );
}

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
  "id" VARCHAR(36) PRIMARY KEY NOT NULL,
  "checksum" VARCHAR(64) NOT NULL,
  "finished_at" TIMESTAMPTZ,
  "migration_name" VARCHAR(255) NOT NULL,
  "logs" TEXT,
  "rolled_back_at" TIMESTAMPTZ,
  "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
  "applied_steps_count" INTEGER NOT NULL DEFAULT 0
)`;

/**
 * Applies pending migrations offline, the way `prisma migrate deploy` does: under Prisma's
 * advisory lock, each recorded in `_prisma_migrations` with its checksum, so Prisma's own CLI
 * sees the same history where its engine is available. Each migration runs in a transaction.
 */
export async function migrate(databaseUrl: string, dir: string, lockTimeoutMs = 60_000): Promise<MigrateResult> {
  const migrations = await readMigrations(dir);
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000, application_name: 'sav3-migrate' });
  await client.connect();
  try {
    await acquireLock(client, lockTimeoutMs);
    try {
      await client.query(CREATE_TABLE);
      const { rows } = await client.query<{
        migration_name: string;
        checksum: string;
        finished_at: Date | null;
        rolled_back_at: Date | null;
      }>('SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" ORDER BY started_at');
      const failed = rows.filter((r) => r.finished_at === null && r.rolled_back_at === null);
      if (failed.length > 0) {
        throw new Error(`migration ${failed[0]!.migration_name} failed earlier; resolve it (prisma migrate resolve) before applying more`);
      }
      const done = new Map(rows.filter((r) => r.finished_at !== null).map((r) => [r.migration_name, r.checksum]));
      const result: MigrateResult = { applied: [], alreadyApplied: [], modified: [] };
      for (const migration of migrations) {
        const checksum = done.get(migration.name);
        if (checksum !== undefined) {
          result.alreadyApplied.push(migration.name);
          if (checksum !== migration.checksum) result.modified.push(migration.name);
          continue;
        }
        result.restorePoint ??= await restorePointBeforeMigrations(client);
        try {
          await apply(client, migration);
        } catch (err) {
          await auditMigration(client, 'failed', {
            applied: result.applied,
            failed: migration.name,
            error: (err as Error).message,
            restorePoint: result.restorePoint,
          });
          throw err;
        }
        result.applied.push(migration.name);
      }
      if (result.applied.length > 0)
        await auditMigration(client, 'success', { applied: result.applied, restorePoint: result.restorePoint });
      return result;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_MIGRATE_LOCK]);
    }
  } finally {
    await client.end();
  }
}

/**
 * `pg_create_restore_point` before the first pending migration: a bad migration can be undone by
 * a point-in-time restore to this name. Best effort (a non-superuser or wal_level=minimal cannot):
 * the reason is reported instead.
 */
async function restorePointBeforeMigrations(client: pg.Client): Promise<MigrateResult['restorePoint']> {
  try {
    const point = await writeGeneratedRestorePoint((name) => writeRestorePoint(client, name, 'system:migrate'), 'before-migrate');
    return { name: point.name, lsn: point.lsn };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * The run in the audit log (`database.migrate`), naming its restore point, written straight to
 * the table (the migrator runs outside the service). Best effort: never fails a migration.
 */
async function auditMigration(client: pg.Client, result: 'success' | 'failed', detail: Record<string, unknown>): Promise<void> {
  try {
    await client.query(
      `INSERT INTO audit_events (id, at, actor, role, action, result, detail, instance_id) VALUES ($1, now(), 'system:migrate', NULL, 'database.migrate', $2, $3, $4)`,
      [randomUUID(), result, JSON.stringify(detail), `migrate:${hostname()}`],
    );
  } catch {
    // the audit table may not exist yet (the very first migrations create it)
  }
}

async function acquireLock(client: pg.Client, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [PRISMA_MIGRATE_LOCK]);
    if (rows[0]?.locked) return;
    if (Date.now() > deadline)
      throw new Error(`another migration holds the lock (pg_advisory_lock(${PRISMA_MIGRATE_LOCK})) after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function apply(client: pg.Client, migration: MigrationFile): Promise<void> {
  const id = randomUUID();
  await client.query(
    'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) VALUES ($1, $2, $3, now(), 0)',
    [id, migration.checksum, migration.name],
  );
  try {
    await client.query('BEGIN');
    await client.query(migration.sql);
    await client.query('UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1', [id]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    // Recorded as failed, as Prisma does, so a later run stops until someone looks at it.
    await client.query('UPDATE "_prisma_migrations" SET logs = $2 WHERE id = $1', [id, err instanceof Error ? err.message : String(err)]);
    throw new Error(`migration ${migration.name} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}
