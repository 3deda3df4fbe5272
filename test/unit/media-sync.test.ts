import { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import type { MediaBackendName } from '../../src/config/config.ts';
import type { DrStateStore } from '../../src/dr-state/dr-state-store.ts';
import { BackupReplicator } from '../../src/media/backup-replicator.ts';
import { MediaSyncService } from '../../src/media/media-sync.ts';
import type { ObjectStore } from '../../src/media/object-store.ts';
import { MemoryObjectStore } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

const put = (store: MemoryObjectStore, key: string, body: string) => store.put(key, Readable.from([Buffer.from(body)]), body.length, 'text/plain');

/** The few list commands the replicator uses, in memory. */
function fakeRedis(): Redis & { list: string[]; down: boolean } {
  const fake = {
    list: [] as string[],
    down: false,
    async rpush(_key: string, value: string) {
      if (fake.down) throw new Error('Connection is closed.');
      return fake.list.push(value);
    },
    async lpop(_key: string, count: number) {
      if (fake.down) throw new Error('Connection is closed.');
      const items = fake.list.splice(0, count);
      return items.length > 0 ? items : null;
    },
    async llen() {
      if (fake.down) throw new Error('Connection is closed.');
      return fake.list.length;
    },
  };
  return fake as unknown as Redis & { list: string[]; down: boolean };
}

describe('MediaSyncService.plan', () => {
  it('lists objects missing or different on the target, and skips canaries', async () => {
    const primary = new MemoryObjectStore('primary');
    const backup = new MemoryObjectStore('backup');
    await put(primary, 'same', 'x');
    await put(backup, 'same', 'x');
    await put(primary, 'only-primary', 'abc');
    await put(primary, 'changed', 'longer');
    await put(backup, 'changed', 'short');
    await put(primary, '.sav3-canary/probe', 'c');
    const sync = new MediaSyncService({
      stores: new Map<MediaBackendName, ObjectStore>([
        ['primary', primary],
        ['backup', backup],
      ]),
      lockStore: {} as DrStateStore,
      redis: {} as Redis,
      prefix: 't:',
      instanceId: 'i',
      logger: captureLogger().logger,
      concurrency: 2,
      inlineMax: 10,
    });
    const plan = await sync.plan('primary', 'backup');
    expect(plan.scanned).toBe(3);
    expect(plan.items.sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: 'changed', size: 6, reason: 'different' },
      { key: 'only-primary', size: 3, reason: 'missing' },
    ]);
  });
});

describe('BackupReplicator', () => {
  it('copies queued uploads to the backup, keeps retrying while it is down, and skips deleted objects', async () => {
    const primary = new MemoryObjectStore('primary');
    const backup = new MemoryObjectStore('backup');
    const redis = fakeRedis();
    const replicator = new BackupReplicator({ redis, prefix: 't:', primary, backup, logger: captureLogger().logger, intervalMs: 1000 });
    await put(primary, 'a', 'alpha');
    await put(primary, 'b', 'beta');
    await replicator.enqueue('a');
    await replicator.enqueue('gone');

    backup.failWith = new Error('connect ECONNREFUSED');
    await replicator.enqueue('b');
    expect(await replicator.drain()).toBe(0);
    expect(await replicator.backlog()).toBe(3); // 'a' back in the queue; 'gone' and 'b' put back untried

    backup.failWith = undefined;
    expect(await replicator.drain()).toBe(2);
    expect(backup.objects.get('a')?.body.toString()).toBe('alpha');
    expect(backup.objects.get('b')?.body.toString()).toBe('beta');
    expect(await replicator.backlog()).toBe(0);
  });

  it('keeps tasks in memory while Redis is down', async () => {
    const primary = new MemoryObjectStore('primary');
    const backup = new MemoryObjectStore('backup');
    const redis = fakeRedis();
    redis.down = true;
    const replicator = new BackupReplicator({ redis, prefix: 't:', primary, backup, logger: captureLogger().logger, intervalMs: 1000 });
    await put(primary, 'k', 'kept');
    await replicator.enqueue('k');
    expect(await replicator.backlog()).toBe(1);
    expect(await replicator.drain()).toBe(1);
    expect(backup.objects.has('k')).toBe(true);
  });
});
