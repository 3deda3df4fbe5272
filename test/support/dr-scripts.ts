import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type { PgNode } from '../../support/pg-cluster.ts';

const run = promisify(execFile);
const SCRIPTS = join(__dirname, '..', '..', 'scripts', 'dr');

/** Runs a runbook script with a bare environment; never throws, returns the exit code. */
export async function drScript(name: string, args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run('bash', [join(SCRIPTS, name), ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export function query<T extends pg.QueryResultRow>(node: PgNode, text: string, values: unknown[] = []): Promise<T[]> {
  return sql<T>(node.url(), text, values);
}

/** One statement (or, without values, several) on a connection of its own. */
export async function sql<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  // A fence ends every session on the node: a pending query still fails, an idle client must not crash the run.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Until the standby replays what the primary has written so far. */
export async function caughtUp(primary: PgNode, standby: PgNode, timeoutMs = 15_000): Promise<void> {
  const { lsn } = (await query<{ lsn: string }>(primary, 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { behind } = (
      await query<{ behind: boolean }>(standby, 'SELECT coalesce(pg_last_wal_replay_lsn() < $1::pg_lsn, true) AS behind', [lsn])
    )[0]!;
    if (!behind) return;
    if (Date.now() > deadline) throw new Error('the standby did not catch up');
    await new Promise((r) => setTimeout(r, 100));
  }
}
