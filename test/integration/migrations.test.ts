import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { createPrisma } from '../../src/adapters/database-clients.ts';
import { migrate, readMigrations } from '../../src/services/database/migrator.ts';
import { PG_ADMIN_URL as ADMIN_URL, databaseUrl } from '../../support/scratch-database.ts';

const DIR = join(__dirname, '..', '..', 'prisma', 'migrations');

describe('offline migrations', () => {
  const name = `sav3_mig_${randomBytes(4).toString('hex')}`;
  const url = databaseUrl(name);
  const admin = new pg.Client({ connectionString: ADMIN_URL });

  beforeAll(async () => {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
  });
  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });

  it('applies every migration once, even when two runners race, and records it as prisma migrate deploy does', async () => {
    const files = await readMigrations(DIR);
    const [a, b] = await Promise.all([migrate(url, DIR), migrate(url, DIR)]);
    expect([...a.applied, ...b.applied].sort()).toEqual(files.map((f) => f.name));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const { rows } = await client.query(
      'SELECT migration_name, checksum, finished_at, applied_steps_count, rolled_back_at FROM "_prisma_migrations" ORDER BY migration_name',
    );
    await client.end();
    expect(rows).toEqual(
      files.map((f) => ({
        migration_name: f.name,
        checksum: f.checksum,
        finished_at: expect.any(Date),
        applied_steps_count: 1,
        rolled_back_at: null,
      })),
    );
    expect(files[0]!.checksum).toMatch(/^[0-9a-f]{64}$/);
  });

  it('is a no-op the second time', async () => {
    const again = await migrate(url, DIR);
    expect(again.applied).toEqual([]);
    expect(again.alreadyApplied.length).toBeGreaterThan(0);
    expect(again.modified).toEqual([]);
  });

  it('the generated Prisma client works against the freshly migrated database', async () => {
    const prisma = createPrisma(url);
    try {
      const created = await prisma.mediaObject.create({
        data: { key: 'k/1', size: BigInt(5), sha256: 'a'.repeat(64), contentType: 'text/plain', backend: 'primary' },
      });
      expect(created.createdAt).toBeInstanceOf(Date);
      const found = await prisma.mediaObject.findUnique({ where: { key: 'k/1' } });
      expect(found?.size).toBe(BigInt(5));
    } finally {
      await prisma.$disconnect();
    }
  });
});
