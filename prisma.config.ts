import { defineConfig } from 'prisma/config';

// The CLI reads DATABASE_URL only for `migrate` and `db` commands; `generate` needs no database.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost/unset' },
});
