import type { MediaBackendName } from '../../src/domain.ts';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { ClusterLock } from '../../src/services/dr-state/cluster-lock.ts';
import { BackupReplicator } from '../../src/services/media/backup-replicator.ts';
import { MediaSyncService } from '../../src/services/media/media-sync.ts';
import type { StoredVersion } from '../../src/services/media/media-version-repository.ts';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { MemoryJobRecords, MemoryLockStore, MemoryObjectStore, MemoryVersionRepository } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';
import { sha256Hex } from '../../support/common.ts';

function world() {
  const primary = new MemoryObjectStore('primary');
  const backup = new MemoryObjectStore('backup');
  const versions = new MemoryVersionRepository();
  const stores = new Map<MediaBackendName, ObjectStore>([
    ['primary', primary],
    ['backup', backup],
  ]);
  /** Stores content under a new version on `on` and commits it for `key`. */
  const write = async (
    key: string,
    body: string,
    on: MemoryObjectStore = primary,
    copyTo: MediaBackendName[] = [],
  ): Promise<StoredVersion> => {
    const v: StoredVersion = {
      id: randomUUID(),
      key,
      size: body.length,
      sha256: sha256Hex(body),
      contentType: 'text/plain',
      backends: [on.backend],
      replaced: false,
    };
    await on.put(`v/${v.id}`, Readable.from([Buffer.from(body)]), body.length, 'text/plain');
    versions.commit(key, v, copyTo);
    return v;
  };
  return { primary, backup, versions, stores, write };
}

function syncService(w: ReturnType<typeof world>) {
  return new MediaSyncService({
    stores: w.stores,
    versions: w.versions,
    locks: new ClusterLock(new MemoryLockStore(), 'i'),
    jobs: new MemoryJobRecords(),
    instanceId: 'i',
    logger: captureLogger().logger,
    concurrency: 2,
    inlineMax: 100,
  });
}

describe('MediaSyncService', () => {
  it('plans from the metadata: current versions not recorded on the target, nothing listed', async () => {
    const w = world();
    await w.write('a', 'old a');
    const a2 = await w.write('a', 'new a');
    const b = await w.write('b', 'bee');
    const list = jest.spyOn(w.primary, 'list');
    const plan = await syncService(w).plan('primary', 'backup');
    expect(plan.items.map((i) => [i.key, i.version])).toEqual([
      ['a', a2.id],
      ['b', b.id],
    ]);
    expect(list).not.toHaveBeenCalled();
  });

  it('syncs user keys whatever their name, including one that starts like a canary', async () => {
    const w = world();
    const v = await w.write('.sav3-canary/user-file', 'mine');
    const plan = await syncService(w).plan('primary', 'backup');
    expect(plan.items.map((i) => i.version)).toEqual([v.id]);
  });

  it('never replaces a newer version with an older one, and never brings back a deleted key', async () => {
    const w = world();
    const old = await w.write('k', 'older');
    await w.backup.put(`v/${old.id}`, Readable.from([Buffer.from('older')]), 5, 'text/plain');
    const newer = await w.write('k', 'newer!');
    const deleted = await w.write('deleted', 'gone');
    w.versions.pointers.delete('deleted');
    w.versions.versions.get(deleted.id)!.replaced = true;
    const result = await syncService(w).sync({ from: 'primary', to: 'backup', dryRun: false });
    expect(result).toMatchObject({ status: 'succeeded', copied: 1 });
    expect(w.backup.objects.get(`v/${newer.id}`)?.body.toString()).toBe('newer!');
    expect(w.backup.objects.get(`v/${old.id}`)?.body.toString()).toBe('older');
    expect(w.backup.objects.has(`v/${deleted.id}`)).toBe(false);
    expect(w.versions.versions.get(newer.id)!.backends).toEqual(['primary', 'backup']);
    // A second sync has nothing to do.
    expect(await syncService(w).sync({ from: 'primary', to: 'backup', dryRun: false })).toMatchObject({ toCopy: 0 });
  });

  it('refuses to spread corrupt content: a copy whose sha256 differs is removed and reported failed', async () => {
    const w = world();
    const v = await w.write('k', 'right');
    w.primary.objects.set(`v/${v.id}`, { body: Buffer.from('wrong'), contentType: 'text/plain' });
    const result = await syncService(w).sync({ from: 'primary', to: 'backup', dryRun: false });
    expect(result).toMatchObject({ status: 'failed', copied: 0 });
    expect(w.backup.objects.has(`v/${v.id}`)).toBe(false);
  });
});

describe('BackupReplicator (outbox)', () => {
  it('copies committed versions, keeps the outbox row until the copy is made while the backup is down, and skips replaced versions', async () => {
    const w = world();
    const stats: number[] = [];
    const replicator = new BackupReplicator({
      versions: w.versions,
      stores: w.stores,
      logger: captureLogger().logger,
      intervalMs: 1000,
      onStats: (s) => stats.push(s.backlog),
    });
    const a = await w.write('a', 'alpha', w.primary, ['backup']);
    await w.write('b', 'first', w.primary, ['backup']);
    const b2 = await w.write('b', 'second', w.primary, ['backup']);

    w.backup.failWith = new Error('connect ECONNREFUSED');
    expect(await replicator.drain()).toBe(0);
    expect((await w.versions.outboxStats()).backlog).toBe(2); // a and b2 wait; the replaced b was retired
    expect(w.versions.retired.map((r) => r.reason)).toEqual(['replaced']);
    for (const t of w.versions.outbox.values()) t.leaseUntil = 0; // the back-off has passed

    w.backup.failWith = undefined;
    expect(await replicator.drain()).toBe(2);
    expect(w.backup.objects.get(`v/${a.id}`)?.body.toString()).toBe('alpha');
    expect(w.backup.objects.get(`v/${b2.id}`)?.body.toString()).toBe('second');
    expect(w.versions.outbox.size).toBe(0);
    expect(w.versions.versions.get(a.id)!.backends).toContain('backup');
  });

  it('a replicator that dies mid-copy loses nothing: the leased row is copied by another once the lease expires', async () => {
    const w = world();
    const v = await w.write('k', 'kept', w.primary, ['backup']);
    // The first instance leases the task and "crashes" (never completes it).
    const leased = await w.versions.claimOutbox(10, 50, randomUUID());
    expect(leased).toHaveLength(1);
    const other = new BackupReplicator({ versions: w.versions, stores: w.stores, logger: captureLogger().logger, intervalMs: 1000 });
    expect(await other.drain()).toBe(0); // still leased
    await new Promise((r) => setTimeout(r, 60));
    expect(await other.drain()).toBe(1);
    expect(w.backup.objects.get(`v/${v.id}`)?.body.toString()).toBe('kept');
    expect(w.versions.outbox.size).toBe(0);
  });
});
