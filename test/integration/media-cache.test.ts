import { Redis } from 'ioredis';
import { createRedisClient } from '../../src/adapters/redis-client.ts';
import { CACHE_SETTLE_MARGIN_MS, cacheClock, RedisMediaCache } from '../../src/services/media/media-cache.ts';
import type { MediaMetadata } from '../../src/services/media/media-repository.ts';
import { captureLogger } from '../support/log-capture.ts';
import { uniquePrefix } from '../support/instance.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function meta(key: string, seq: number, version = `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`): MediaMetadata {
  return {
    key,
    size: 1,
    sha256: 'a'.repeat(64),
    contentType: 'text/plain',
    backend: 'primary',
    createdAt: new Date(),
    version,
    backends: ['primary'],
    seq,
  };
}

describe('RedisMediaCache: every entry dies at most one TTL after the observation it comes from', () => {
  let redis: Redis;
  let direct: Redis;
  const waits: number[] = [];
  let cache: RedisMediaCache;
  let prefix: string;

  beforeAll(async () => {
    redis = createRedisClient(REDIS_URL, captureLogger().logger, 'cache-test');
    direct = new Redis(REDIS_URL);
    await new Promise((r) => redis.once('ready', r));
  });
  beforeEach(() => {
    prefix = uniquePrefix();
    waits.length = 0;
    cache = new RedisMediaCache(redis, prefix, 2, async (ms) => void waits.push(ms));
  });
  afterAll(async () => {
    redis.disconnect();
    direct.disconnect();
  });

  it("a reader's fill lives only what is left of the TTL since its database read began, and none when it is over", async () => {
    await cache.put(meta('k', 1), cacheClock() - 1500);
    const pttl = await direct.pttl(`${prefix}media:v3:k`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(500);
    await cache.put(meta('late', 1), cacheClock() - 2100);
    expect(await cache.get('late')).toBeUndefined();
  });

  it('never moves an entry backwards, and never caches a seq-0 placeholder', async () => {
    await cache.recordWrite(meta('k', 5), cacheClock());
    await cache.put(meta('k', 4), cacheClock());
    expect(await cache.get('k')).toMatchObject({ seq: 5 });
    await cache.put(meta('k', 0), cacheClock());
    expect(await cache.get('k')).toMatchObject({ seq: 5 });
    await cache.markDeleted('k', 6, cacheClock());
    expect(await cache.get('k')).toBe('deleted');
    expect(waits).toEqual([]);
  });

  it('a writer whose commit outlived the TTL removes an older entry instead of writing one that is already dead', async () => {
    await cache.put(meta('k', 1), cacheClock());
    await cache.recordWrite(meta('k', 2), cacheClock() - 5000);
    expect(await cache.get('k')).toBeUndefined();
    expect(waits).toEqual([]);
  });

  it('sends its compare-and-set script at most once per connection, then only its sha (EVALSHA)', async () => {
    const monitor = await direct.monitor();
    const seen: string[] = [];
    monitor.on('monitor', (_time: string, args: string[]) => {
      // The script's own GET and SET show too: only the calls count.
      const command = args[0]!.toLowerCase();
      if (command.startsWith('eval') && args.some((a) => a.startsWith(`${prefix}media:v3:`))) seen.push(command);
    });
    for (let seq = 1; seq <= 3; seq += 1) await cache.recordWrite(meta('k', seq), cacheClock());
    await new Promise((r) => setTimeout(r, 200));
    monitor.disconnect();
    expect(seen).toHaveLength(3);
    expect(seen.filter((c) => c === 'eval').length).toBeLessThanOrEqual(1);
    expect(await cache.get('k')).toMatchObject({ seq: 3 });
  });

  it('a writer that cannot reach Redis waits out the TTL before it may acknowledge; so does an unknown outcome', async () => {
    const offline = new Redis(REDIS_URL, { lazyConnect: true });
    const cut = new RedisMediaCache(offline, prefix, 2, async (ms) => void waits.push(ms));
    await cut.recordWrite(meta('k', 3), cacheClock());
    await cut.markDeleted('k', 4, cacheClock());
    await cut.recordWrite(meta('k', 0), cacheClock()); // superseded since, seq unknown
    await cache.invalidate();
    expect(waits).toEqual([2000, 2000, 2000, 2000].map((w) => w + CACHE_SETTLE_MARGIN_MS));
    offline.disconnect();
  });
});
