import { randomUUID } from 'node:crypto';
import { createPrisma, DatabaseClients, disconnectPrisma, poolOf } from '../../src/adapters/database-clients.ts';
import { PrismaMediaRepository } from '../../src/services/media/media-repository.ts';
import { createScratchDatabase, type ScratchDatabase } from '../../support/scratch-database.ts';

const write = (key: string) => ({
  key,
  version: randomUUID(),
  size: 3,
  sha256: 'a'.repeat(64),
  contentType: 'text/plain',
  backend: 'primary' as const,
  createdAt: new Date(),
  copyTo: [],
  commitBy: new Date(Date.now() + 60_000),
  fenceEpoch: 0,
});

describe('request clients: the media commit runs on the pg pool under the Prisma client', () => {
  let db: ScratchDatabase;
  beforeAll(async () => {
    db = await createScratchDatabase('sav3_test_clients');
  });
  afterAll(async () => {
    await db.drop();
  });

  it('commits, reads and lists through the pool, not through Prisma, with the same answers', async () => {
    const client = createPrisma(db.url);
    const pool = poolOf(client)!;
    expect(pool).toBeDefined();
    const viaPool = jest.spyOn(pool, 'query');
    const viaPrisma = jest.spyOn(client, '$queryRawUnsafe');
    const repo = new PrismaMediaRepository(() => client, 'test:');
    const firstWrite = write('a/1');
    const first = await repo.commitWrite(firstWrite);
    const second = await repo.commitWrite(write('a/1'));
    expect(second.seq).toBeGreaterThan(first.seq);
    expect(await repo.find('a/1')).toMatchObject({ key: 'a/1', version: second.version, size: 3, seq: second.seq, backends: ['primary'] });
    expect((await repo.list('a/', 10)).map((m) => m.version)).toEqual([second.version]);
    expect(await repo.versionCommitted(firstWrite.version)).toBe(true);
    expect(await repo.commitDelete('a/1', 0)).toBeGreaterThan(second.seq);
    expect(viaPool).toHaveBeenCalled();
    expect(viaPrisma).not.toHaveBeenCalled();
    await disconnectPrisma(client);
    expect(pool.ending).toBe(true);
  });

  it('a client released by DatabaseClients ends its pool even when only the pool was used', async () => {
    const clients = new DatabaseClients({ primary: db.url });
    const pool = poolOf(clients.client())!;
    await pool.query('SELECT 1');
    expect(pool.totalCount).toBe(1);
    await clients.release('primary');
    expect(pool.ending).toBe(true);
    expect(pool.totalCount).toBe(0);
  });
});
