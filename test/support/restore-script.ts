// Running scripts/dr/restore-database.sh against a backup world (test/support/world.ts), as the
// restore tests do.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { sql } from './dr-scripts.ts';
import { OPERATOR_TOKEN, type TestInstance } from './instance.ts';
import type { BackupWorld } from './world.ts';

const SCRIPT = join(__dirname, '..', '..', 'scripts', 'dr', 'restore-database.sh');

/** Runs scripts/dr/restore-database.sh with a bare environment (PATH, HOME and `env`), killed after `timeoutMs`; never throws. */
export function restoreScript(
  args: string[],
  env: Record<string, string>,
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env }, timeout: timeoutMs },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** What restore-database.sh needs to restore `world`'s primary through `api`; its report journals go below `journalDir`. */
export function restoreScriptEnv(world: BackupWorld, api: TestInstance, journalDir: string): Record<string, string> {
  return {
    SAV3_API_URL: api.url,
    SAV3_ADMIN_TOKEN: OPERATOR_TOKEN,
    DATABASE_URL: world.cluster.primary.url(),
    PGDATA: world.cluster.primary.dataDir,
    SAV3_RESTORE_JOURNAL_DIR: journalDir,
    ...world.repo.env,
  };
}

/** Until the WAL written so far is in `world`'s pgBackRest archive (`check` waits for the switched segment). */
export async function archiveAll(world: BackupWorld): Promise<void> {
  await sql(world.cluster.primary.url(), 'SELECT pg_switch_wal()');
  await world.repo.exec(['check']);
}
