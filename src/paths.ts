import { join } from 'node:path';

/** The SQL migrations (prisma/migrations/<ts>_<name>/migration.sql), applied by src/services/database/migrator.ts. */
export const MIGRATIONS_DIR = join(__dirname, '..', 'prisma', 'migrations');
