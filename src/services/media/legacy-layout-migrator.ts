import type { MediaBackendName } from '../../domain.ts';
import { randomUUID } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { Logger } from '../../logger.ts';
import { HashingStream } from './hashing-stream.ts';
import { versionObjectName } from './media-repository.ts';
import { ObjectMissingError, type ObjectStore } from '../../adapters/object-store.ts';
import { errorMessage } from '../../lib/error-message.ts';

interface LegacyRow {
  key: string;
  size: bigint;
  sha256: string;
  content_type: string;
  backend: string;
}

export interface LegacyMigrationReport {
  migrated: number;
  /** Overwritten or deleted while being migrated: the newer write stands, the copy was dropped. */
  superseded: number;
  failed: { key: string; error: string }[];
}

/**
 * Moves objects of the old layout (content stored under the user's key) to versions: the content
 * is copied to a new version name and checked against the recorded sha256, then the pointer is
 * moved only if the key still points at that legacy content; the legacy object is removed after.
 * Safe to run while the service serves traffic, and to run again.
 */
export async function migrateLegacyLayout(deps: {
  prisma: PrismaClient;
  stores: ReadonlyMap<MediaBackendName, ObjectStore>;
  logger: Logger;
}): Promise<LegacyMigrationReport> {
  const report: LegacyMigrationReport = { migrated: 0, superseded: 0, failed: [] };
  for (let after = ''; ;) {
    const rows = await deps.prisma.$queryRawUnsafe<LegacyRow[]>(
      `SELECT key, size, sha256, content_type, backend FROM media_objects WHERE version IS NULL AND deleted_at IS NULL AND key COLLATE "C" > $1 ORDER BY key COLLATE "C" LIMIT 200`,
      after,
    );
    for (const row of rows) {
      // Each attempt is safe to repeat: a transient failure (a busy or restarting store) is retried.
      for (let attempt = 1; ; attempt += 1) {
        try {
          report[(await migrateOne(row, deps)) ? 'migrated' : 'superseded'] += 1;
          break;
        } catch (err) {
          if (attempt < 3) {
            await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
            continue;
          }
          report.failed.push({ key: row.key, error: errorMessage(err) });
          break;
        }
      }
    }
    if (rows.length < 200) return report;
    after = rows.at(-1)!.key;
  }
}

async function migrateOne(
  row: LegacyRow,
  deps: { prisma: PrismaClient; stores: ReadonlyMap<MediaBackendName, ObjectStore>; logger: Logger },
): Promise<boolean> {
  const sha256 = row.sha256.trim();
  const size = Number(row.size);
  const order = [row.backend as MediaBackendName, ...[...deps.stores.keys()].filter((b) => b !== row.backend)];
  let lastError: unknown = new Error(`no backend holds ${row.key}`);
  for (const backend of order) {
    const store = deps.stores.get(backend);
    if (!store) continue;
    const version = randomUUID();
    try {
      const hasher = new HashingStream(size);
      await Promise.all([
        pipeline(await store.get(row.key), hasher),
        store.put(versionObjectName(version), hasher, size, row.content_type),
      ]);
      if (hasher.digest() !== sha256) throw new Error(`legacy content of ${row.key} on ${backend} does not match its sha256`);
    } catch (err) {
      await store.remove(versionObjectName(version)).catch(() => undefined);
      lastError = err;
      if (err instanceof ObjectMissingError || /sha256/.test(String(err))) continue;
      throw err;
    }
    // Moves the pointer only if the key still holds that legacy content (re-checked under the row lock).
    const moved = await deps.prisma.$queryRawUnsafe<{ n: number }[]>(
      `WITH upd AS (
           UPDATE media_objects SET version = $2::uuid, seq = nextval('media_write_seq'), updated_at = now()
           WHERE key = $1::text AND version IS NULL AND deleted_at IS NULL AND sha256 = $3::text RETURNING key),
         ins AS (
           INSERT INTO media_versions (id, key, size, sha256, content_type, backends, created_at)
           SELECT $2::uuid, $1::text, $4::bigint, $3::text, $5::text, ARRAY[$6::text], now() FROM upd)
         SELECT count(*)::int AS n FROM upd`,
      row.key,
      version,
      sha256,
      BigInt(size),
      row.content_type,
      backend,
    );
    if (moved[0]!.n === 0) {
      await store.remove(versionObjectName(version)).catch(() => undefined);
      return false;
    }
    for (const s of deps.stores.values()) await s.remove(row.key).catch(() => undefined);
    deps.logger.info({ key: row.key, version, backend }, 'legacy media object moved to a version');
    return true;
  }
  throw lastError;
}
