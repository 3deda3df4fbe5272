import type pg from 'pg';
import { withNodeConnection } from '../../adapters/pg-connection.ts';

/**
 * Fences a PostgreSQL node that must no longer take writes (a returning old primary): every new
 * transaction defaults to read-only (ALTER SYSTEM + reload, which survives a restart), and its
 * client sessions are ended so no transaction opened before keeps writing. Returns how many
 * sessions were ended.
 */
export async function fenceNode(url: string, timeoutMs: number): Promise<{ terminated: number }> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await withNodeConnection({ connectionString: url, timeoutMs, signal: controller.signal }, fenceOn);
  } finally {
    clearTimeout(timer);
  }
}

/** fenceNode on a connection already open to the node (outside any transaction). */
export async function fenceOn(client: pg.Client): Promise<{ terminated: number }> {
  await client.query('ALTER SYSTEM SET default_transaction_read_only = on');
  await client.query('SELECT pg_reload_conf()');
  const { rows } = await client.query<{ n: number }>(
    `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`,
  );
  return { terminated: rows[0]?.n ?? 0 };
}

/** Lifts a fence (used when an operator rebuilds the node; never automatic). */
export async function unfenceNode(url: string, timeoutMs: number): Promise<void> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    await withNodeConnection({ connectionString: url, timeoutMs, signal: controller.signal }, async (client) => {
      await client.query('ALTER SYSTEM RESET default_transaction_read_only');
      await client.query('SELECT pg_reload_conf()');
    });
  } finally {
    clearTimeout(timer);
  }
}
