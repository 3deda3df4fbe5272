import pg from 'pg';
import { CANARY_PREFIX } from '../media/media-failover-service.ts';
import type { ObjectStore } from '../media/object-store.ts';

export interface OrphanObject {
  backend: string;
  key: string;
  size: number;
}

/**
 * After a point-in-time restore, objects whose metadata row is gone: uploaded after the target
 * (content without metadata). Listed for the operator to keep (re-register) or remove; never
 * deleted here. The metadata query is the one place that knows the media table.
 */
export async function findObjectsWithoutMetadata(databaseUrl: string, stores: ReadonlyMap<string, ObjectStore>): Promise<OrphanObject[]> {
  const client = new pg.Client({ connectionString: databaseUrl, query_timeout: 120_000 });
  client.on('error', () => undefined);
  await client.connect();
  const known = new Set<string>();
  try {
    for (const row of (await client.query<{ key: string }>('SELECT key FROM media_objects')).rows) known.add(row.key);
  } finally {
    await client.end().catch(() => undefined);
  }
  const orphans: OrphanObject[] = [];
  for (const [backend, store] of stores) {
    for await (const object of store.list('')) {
      if (object.key.startsWith(CANARY_PREFIX) || known.has(object.key)) continue;
      orphans.push({ backend, key: object.key, size: object.size });
    }
  }
  return orphans;
}
