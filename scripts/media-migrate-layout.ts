// `npm run media:migrate-layout`: moves media objects of the old layout (content under the user's
// key) to immutable versions, with the service's own configuration (DATABASE_URL, MEDIA_*).
// Safe while the service runs; prints a JSON report; exits 1 if any object failed.
import type { MediaBackendName } from '../src/domain.ts';
import { loadConfig } from '../src/config/config.ts';
import { createPrisma } from '../src/adapters/database-clients.ts';
import { createLogger } from '../src/logger.ts';
import { migrateLegacyLayout } from '../src/services/media/legacy-layout-migrator.ts';
import { MinioObjectStore } from '../src/adapters/minio-object-store.ts';
import type { ObjectStore } from '../src/adapters/object-store.ts';

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const logger = createLogger(config.logLevel);
  const prisma = createPrisma(config.databaseUrl);
  const stores = new Map<MediaBackendName, ObjectStore>([['primary', new MinioObjectStore(config.mediaPrimary)]]);
  if (config.mediaBackup) stores.set('backup', new MinioObjectStore(config.mediaBackup));
  try {
    const report = await migrateLegacyLayout({ prisma, stores, logger });
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    process.exitCode = report.failed.length > 0 ? 1 : 0;
  } finally {
    await prisma.$disconnect();
    for (const s of stores.values()) s.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`media:migrate-layout: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
