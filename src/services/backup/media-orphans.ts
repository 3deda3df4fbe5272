import { createPrisma } from '../../adapters/database-clients.ts';
import { isVersionObjectName, PrismaMediaVersionRepository, VERSION_PREFIX } from '../media/media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';

export interface OrphanObject {
  backend: string;
  /** The object name (`v/<version>`): content is stored under its version, not the user's key. */
  object: string;
  size: number;
  lastModified: string | null;
}

/**
 * After a point-in-time restore: content whose version row the restored database does not have,
 * i.e. uploaded after the target (content without metadata). Listed for the operator to keep
 * (upload again) or remove; never deleted here. The media garbage collector removes such content
 * once it is older than MEDIA_GC_GRACE_SECONDS: decide before then.
 */
export async function findObjectsWithoutMetadata(databaseUrl: string, stores: ReadonlyMap<string, ObjectStore>): Promise<OrphanObject[]> {
  const prisma = createPrisma(databaseUrl);
  try {
    const versions = new PrismaMediaVersionRepository(() => prisma);
    const orphans: OrphanObject[] = [];
    for (const [backend, store] of stores) orphans.push(...(await listOrphans(backend, store, (names) => versions.referenced(names))));
    return orphans;
  } finally {
    await prisma.$disconnect().catch(() => undefined);
  }
}

/** A listing that fails midway (a backend busy or restarting) is tried again from the start. */
async function listOrphans(
  backend: string,
  store: ObjectStore,
  referenced: (names: string[]) => Promise<Set<string>>,
  attempts = 4,
): Promise<OrphanObject[]> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      const found: OrphanObject[] = [];
      let batch: OrphanObject[] = [];
      const flush = async () => {
        const known = await referenced(batch.map((o) => o.object));
        found.push(...batch.filter((o) => !known.has(o.object)));
        batch = [];
      };
      for await (const object of store.list(VERSION_PREFIX)) {
        // Only version names: anything else under v/ is not content of this service's versions.
        if (!isVersionObjectName(object.key)) continue;
        batch.push({ backend, object: object.key, size: object.size, lastModified: object.lastModified?.toISOString() ?? null });
        if (batch.length >= 500) await flush();
      }
      if (batch.length > 0) await flush();
      return found;
    } catch (err) {
      if (attempt >= attempts) throw new Error(`listing the ${backend} media backend failed ${attempts} times: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}
