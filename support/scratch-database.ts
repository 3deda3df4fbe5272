// A throwaway, freshly migrated database on the machine's PostgreSQL, for tests, drills and bench.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { migrate } from '../src/services/database/migrator.ts';

export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const MIGRATIONS = join(__dirname, '..', 'prisma', 'migrations');

export interface ScratchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

export function databaseUrl(name: string, adminUrl = PG_ADMIN_URL): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function adminQuery(sql: string, adminUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

export async function createScratchDatabase(prefix: string, adminUrl = PG_ADMIN_URL): Promise<ScratchDatabase> {
  const name = `${prefix}_${Date.now()}_${randomBytes(3).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`, adminUrl);
  const url = databaseUrl(name, adminUrl);
  await migrate(url, MIGRATIONS);
  return { name, url, drop: () => dropDatabase(name, adminUrl) };
}

export async function dropDatabase(name: string, adminUrl = PG_ADMIN_URL): Promise<void> {
  await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`, adminUrl);
}
