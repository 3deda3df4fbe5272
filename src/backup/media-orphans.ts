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
  const client = new pg.Client({ connectionString: databaseUrl, statement_timeout: 120_000 });
  client.on('error', () => undefined);
  await client.connect();
  const known = new Set<string>();
  try {
    for (const row of (await client.query<{ key: string }>('SELECT key FROM media_objects')).rows) known.add(row.key);
  } finally {
    await client.end().catch(() => undefined);
  }
  const orphans: OrphanObject[] = [];
  for (const [backend, store] of stores) orphans.push(...(await listOrphans(backend, store, known)));
  return orphans;
}

/** A listing that fails midway (a backend busy or restarting) is tried again from the start. */
async function listOrphans(backend: string, store: ObjectStore, known: ReadonlySet<string>, attempts = 4): Promise<OrphanObject[]> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      const found: OrphanObject[] = [];
      for await (const object of store.list('')) {
        if (object.key.startsWith(CANARY_PREFIX) || known.has(object.key)) continue;
        found.push({ backend, key: object.key, size: object.size });
      }
      return found;
    } catch (err) {
      if (attempt >= attempts) throw new Error(`listing the ${backend} media backend failed ${attempts} times: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}
