import pg from 'pg';

/** Whether the node at `url` holds the metadata row of media `key` (a connection of its own, 3 s to connect). */
export async function hasMediaRow(url: string, key: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query('SELECT 1 FROM media_objects WHERE key = $1', [key])).rowCount === 1;
  } finally {
    await client.end().catch(() => undefined);
  }
}
