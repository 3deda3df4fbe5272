import pg from 'pg';

export interface PgProbeOptions {
  connectionString: string;
  timeoutMs: number;
  signal: AbortSignal;
}

/**
 * Runs queries on a connection of its own, never one from the request pool, so a hung server
 * cannot starve requests. The connection has connect, statement and query timeouts, and is
 * destroyed the moment the signal fires.
 */
export async function withProbeConnection<T>(options: PgProbeOptions, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const { connectionString, timeoutMs, signal } = options;
  signal.throwIfAborted();
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    statement_timeout: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'sav3-health-probe',
  });
  // An error after the probe gave up (e.g. the socket destroyed below) must not crash the process.
  client.on('error', () => undefined);
  const destroy = () => destroySocket(client);
  signal.addEventListener('abort', destroy, { once: true });
  try {
    await client.connect();
    return await fn(client);
  } finally {
    signal.removeEventListener('abort', destroy);
    if (signal.aborted) destroy();
    else client.end().catch(() => undefined);
  }
}

/**
 * Cuts the socket with an error, as pg's own connect timeout does: that settles a pending
 * connect() or query. (client.end() while connecting would leave connect() pending forever.)
 */
function destroySocket(client: pg.Client): void {
  const connection = (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection;
  connection?.stream?.destroy(new Error('probe aborted: no answer within the health timeout'));
}

export interface DatabaseProbeData {
  inRecovery: boolean;
}

export async function probeDatabase(options: PgProbeOptions): Promise<DatabaseProbeData> {
  return withProbeConnection(options, async (client) => {
    const { rows } = await client.query<{ in_recovery: boolean }>('SELECT pg_is_in_recovery() AS in_recovery');
    return { inRecovery: rows[0]?.in_recovery === true };
  });
}
