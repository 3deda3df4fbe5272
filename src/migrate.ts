// `npm run db:migrate` (and the container's one-shot `migrate` service: node dist/migrate.js):
// applies prisma/migrations to DATABASE_URL (or DATABASE_URL_FILE) with no network access.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrate } from './database/migrator.ts';

async function main(): Promise<void> {
  const file = process.env.DATABASE_URL_FILE;
  const url = file ? readFileSync(file, 'utf8').trim() : process.env.DATABASE_URL;
  if (!url) {
    console.error('DATABASE_URL: required');
    process.exit(1);
  }
  const result = await migrate(url, join(__dirname, '..', 'prisma', 'migrations'));
  if (result.restorePoint && 'name' in result.restorePoint) console.log(`restore point ${result.restorePoint.name} at ${result.restorePoint.lsn} (recover to it with --target-name)`);
  else if (result.restorePoint) console.warn(`warning: no restore point before migrating: ${result.restorePoint.error}`);
  for (const name of result.applied) console.log(`applied ${name}`);
  for (const name of result.modified) console.warn(`warning: ${name} changed after it was applied`);
  console.log(result.applied.length === 0 ? 'database is up to date' : `${result.applied.length} migration(s) applied`);
}

main().catch((err: unknown) => {
  console.error(`migration failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
