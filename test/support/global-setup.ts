// One isolated, freshly migrated database per test run; Redis keys are isolated per test file.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { migrate } from '../../src/database/migrator.ts';

export const ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

export default async function globalSetup(): Promise<void> {
  const name = `sav3_test_${Date.now()}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  await migrate(databaseUrl(name), join(__dirname, '..', '..', 'prisma', 'migrations'));
  process.env.TEST_DATABASE_NAME = name;
  process.env.TEST_DATABASE_URL = databaseUrl(name);
}
