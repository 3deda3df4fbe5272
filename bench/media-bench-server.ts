// The media benchmark's API, in a process of their own, using the two S3 servers named in BENCH_S3.
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pg from 'pg';
import { loadConfig } from '../src/config/config.ts';
import { createLogger } from '../src/logger.ts';
import { createService } from '../src/service.ts';
import { mediaEnv, type S3Endpoint } from '../support/s3-server.ts';

async function main(): Promise<void> {
  const { primary, backup } = JSON.parse(process.env.BENCH_S3 ?? '') as { primary: S3Endpoint; backup: S3Endpoint };
  const config = loadConfig({
    DATABASE_URL: process.env.BENCH_DATABASE_URL,
    ...mediaEnv('PRIMARY', primary),
    ...mediaEnv('BACKUP', backup),
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    MEDIA_SYNC_CONCURRENCY: process.env.BENCH_SYNC_CONCURRENCY ?? '16',
    MEDIA_SYNC_INLINE_MAX: '100000',
    ADMIN_TOKENS: process.env.BENCH_ADMIN_TOKENS,
    DR_STATE_FILE: join(tmpdir(), `sav3-bench-media-${process.pid}.json`),
  });
  const api = await createService(config, createLogger('silent'), { redisKeyPrefix: `bench-media:${process.pid}:` });
  const address = await api.listen();
  const store = api.objectStores;

  process.on('message', (m: { seed?: number }) => {
    void (async () => {
      if (!m.seed) return;
      // Seeds N small objects as committed versions on the primary (content and metadata rows).
      const ids = Array.from({ length: m.seed }, () => randomUUID());
      const queue = ids.map((id, i) => ({ id, i }));
      const primaryStore = store.get('primary')!;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let item = queue.shift(); item; item = queue.shift()) {
            const body = `small object ${item.i} `.repeat(40);
            await primaryStore.put(`v/${item.id}`, Readable.from([Buffer.from(body)]), body.length, 'text/plain');
          }
        }),
      );
      const client = new pg.Client({ connectionString: process.env.BENCH_DATABASE_URL });
      await client.connect();
      await client.query(
        `WITH src AS (SELECT id::uuid AS id, 'sync/' || lpad((n - 1)::text, 5, '0') AS key, repeat('small object ' || (n - 1) || ' ', 40) AS body
                      FROM unnest($1::text[]) WITH ORDINALITY AS t(id, n)),
         v AS (INSERT INTO media_versions (id, key, size, sha256, content_type, backends) SELECT id, key, length(body), encode(sha256(body::bytea), 'hex'), 'text/plain', ARRAY['primary'] FROM src)
         INSERT INTO media_objects (key, size, sha256, content_type, backend, updated_at, version) SELECT key, length(body), encode(sha256(body::bytea), 'hex'), 'text/plain', 'primary', now(), id FROM src`,
        [ids],
      );
      await client.end();
      process.send?.({ seeded: m.seed });
    })();
  });
  process.send?.({ api: address.port });
  process.on('disconnect', () => process.exit(0));
}

void main();
