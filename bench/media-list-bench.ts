// `npm run bench:media-list`: listing a narrow prefix (`GET /media?prefix=…`, the repository's
// query through Prisma) on a database of 1k keys against one of 1M keys, in the same run, as a
// ratio of medians. Each database is a scratch database of its own, filled with generate_series
// (every key current, with its version row). Keys: users/<6 digits>/f<digit>, so a user's prefix
// matches 10 keys and `users/0001` matches 100 (or every key of the 1k database).
// For reference, the same prefix matched by a sequential scan (LIKE under the database's collation,
// as the listing did before the "C" index): it grows with the table, which shows the figure can move.
import pg from 'pg';
import { createPrisma } from '../src/adapters/database-clients.ts';
import type { PrismaClient } from '../src/generated/prisma/client.ts';
import { PrismaMediaRepository } from '../src/services/media/media-repository.ts';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.ts';

const SMALL = Number(process.env.BENCH_LIST_SMALL ?? 1000);
const LARGE = Number(process.env.BENCH_LIST_LARGE ?? 1_000_000);
const QUERIES = Number(process.env.BENCH_LIST_QUERIES ?? 2000);
const SCAN_QUERIES = Number(process.env.BENCH_LIST_SCAN_QUERIES ?? 20);

async function fill(db: ScratchDatabase, rows: number): Promise<void> {
  const sql = new pg.Client({ connectionString: db.url });
  await sql.connect();
  try {
    const t = performance.now();
    await sql.query(
      `CREATE TEMP TABLE gen AS
      SELECT gen_random_uuid() AS id, 'users/' || lpad((g / 10)::text, 6, '0') || '/f' || (g % 10) AS key FROM generate_series(0, $1::int - 1) g`,
      [rows],
    );
    await sql.query(
      `INSERT INTO media_versions (id, key, size, sha256, content_type, backends) SELECT id, key, 1000, repeat('a', 64), 'image/png', ARRAY['primary'] FROM gen`,
    );
    await sql.query(
      `INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at, version) SELECT key, 1000, repeat('a', 64), 'image/png', 'primary', now(), id FROM gen`,
    );
    await sql.query('VACUUM ANALYZE media_objects');
    await sql.query('VACUUM ANALYZE media_versions');
    console.log(`filled ${db.name} with ${rows} keys in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  } finally {
    await sql.end();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function p95(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.95))]!;
}

async function main(): Promise<void> {
  const small = await createScratchDatabase('sav3_bench_list_1k');
  const large = await createScratchDatabase('sav3_bench_list_1m');
  const clients: PrismaClient[] = [];
  try {
    await fill(small, SMALL);
    await fill(large, LARGE);
    const repo = (db: ScratchDatabase) => {
      const client = createPrisma(db.url);
      clients.push(client);
      return { client, repo: new PrismaMediaRepository(() => client) };
    };
    const s = repo(small);
    const l = repo(large);
    const users = (rows: number) => Math.floor(rows / 10);
    const prefixOf = (rows: number) => `users/${String(Math.floor(Math.random() * users(rows))).padStart(6, '0')}/`;
    // Warm both (connections, plans, the index pages a narrow listing touches).
    for (let i = 0; i < 200; i += 1) {
      await s.repo.list(prefixOf(SMALL), 100);
      await l.repo.list(prefixOf(LARGE), 100);
    }
    const times = { small: [] as number[], large: [] as number[] };
    for (let i = 0; i < QUERIES; i += 1) {
      // Interleaved, so drift on a busy machine hits both alike.
      for (const [name, r, rows] of [
        ['small', s, SMALL],
        ['large', l, LARGE],
      ] as const) {
        const prefix = prefixOf(rows);
        const t = performance.now();
        const items = await r.repo.list(prefix, 100);
        times[name].push(performance.now() - t);
        if (items.length !== 10) throw new Error(`listing ${prefix} gave ${items.length} items, expected 10`);
      }
    }
    const ms = (x: number) => `${x.toFixed(3)} ms`;
    console.log(`\nnarrow prefix (10 of the keys), ${QUERIES} interleaved listings each, through PrismaMediaRepository.list:`);
    console.log(`  ${String(SMALL).padStart(8)} keys: median ${ms(median(times.small))}, p95 ${ms(p95(times.small))}`);
    console.log(`  ${String(LARGE).padStart(8)} keys: median ${ms(median(times.large))}, p95 ${ms(p95(times.large))}`);
    const ratio = median(times.large) / median(times.small);
    console.log(`  ratio of medians ${LARGE}/${SMALL} keys: ${ratio.toFixed(2)} (goal: about 1, the same cost)`);

    // Reference: a sequential scan of the same prefix (what a LIKE the "C" index cannot serve does).
    const scan = async (client: PrismaClient, rows: number) => {
      const out: number[] = [];
      for (let i = 0; i < SCAN_QUERIES; i += 1) {
        const prefix = prefixOf(rows);
        const t = performance.now();
        await client.$queryRawUnsafe(
          `SELECT key FROM media_objects WHERE (key COLLATE "C") || '' LIKE $1 || '%' AND deleted_at IS NULL ORDER BY key COLLATE "C" LIMIT 100`,
          prefix,
        );
        out.push(performance.now() - t);
      }
      return median(out);
    };
    const scanSmall = await scan(s.client, SMALL);
    const scanLarge = await scan(l.client, LARGE);
    console.log(
      `\nreference, the same listing by sequential scan: ${ms(scanSmall)} at ${SMALL} keys, ${ms(scanLarge)} at ${LARGE} keys (ratio ${(scanLarge / scanSmall).toFixed(1)})`,
    );
  } finally {
    for (const c of clients) await c.$disconnect().catch(() => undefined);
    await small.drop();
    await large.drop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
