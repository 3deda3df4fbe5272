// `npm run db:migrate` (and the container's one-shot `migrate` service: node dist/migrate.js):
// applies prisma/migrations to DATABASE_URL (or DATABASE_URL_FILE) with no network access.
// A database that is not reachable yet (starting, restarting) is retried for MIGRATE_WAIT_SECONDS
// (default 60); any other failure, and one that outlasts the wait, exits 1 at once.
import { readFileSync } from 'node:fs';
import { migrate } from './services/database/migrator.ts';
import { MIGRATIONS_DIR } from './paths.ts';
import { classifyError } from './health/probe-error.ts';
import { errorMessage } from './lib/error-message.ts';

async function main(): Promise<void> {
  const file = process.env.DATABASE_URL_FILE;
  const url = file ? readFileSync(file, 'utf8').trim() : process.env.DATABASE_URL;
  if (!url) {
    console.error('DATABASE_URL: required');
    process.exit(1);
  }
  const waitSeconds = Number(process.env.MIGRATE_WAIT_SECONDS ?? 60);
  const deadline = Date.now() + (Number.isFinite(waitSeconds) ? waitSeconds : 60) * 1000;
  for (let attempt = 1; ; attempt += 1) {
    try {
      const result = await migrate(url, MIGRATIONS_DIR);
      if (result.restorePoint && 'name' in result.restorePoint)
        console.log(`restore point ${result.restorePoint.name} at ${result.restorePoint.lsn} (recover to it with --target-name)`);
      else if (result.restorePoint) console.warn(`warning: no restore point before migrating: ${result.restorePoint.error}`);
      for (const name of result.applied) console.log(`applied ${name}`);
      for (const name of result.modified) console.warn(`warning: ${name} changed after it was applied`);
      console.log(result.applied.length === 0 ? 'database is up to date' : `${result.applied.length} migration(s) applied`);
      return;
    } catch (err) {
      const { code } = classifyError(err);
      if ((code !== 'connection_refused' && code !== 'timeout') || Date.now() > deadline) throw err;
      console.warn(`database not reachable yet (${code}), attempt ${attempt}; retrying`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

main().catch((err: unknown) => {
  console.error(`migration failed: ${errorMessage(err)}`);
  process.exit(1);
});
