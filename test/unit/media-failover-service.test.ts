import type { MediaBackendName } from '../../src/domain.ts';
import { ConflictError, DependencyUnavailableError, PreconditionFailedError } from '../../src/http/app-error.ts';
import { MediaFailoverService, MEDIA_LOCK } from '../../src/services/media/media-failover-service.ts';
import type { ObjectStore } from '../../src/adapters/object-store.ts';
import { MemoryMediaCache, MemoryObjectStore } from '../support/fakes.ts';
import { drWorld } from '../support/dr-world.ts';

function setup(configured: MediaBackendName[] = ['primary', 'backup']) {
  const w = drWorld();
  const parts = w.instance('api-1');
  const primary = new MemoryObjectStore('primary');
  const backup = new MemoryObjectStore('backup');
  const stores = new Map<MediaBackendName, ObjectStore>(configured.map((n) => [n, n === 'primary' ? primary : backup]));
  const cache = new MemoryMediaCache();
  cache.entries.set('k', { seq: 1, value: 'deleted' });
  const failover = new MediaFailoverService({
    stores,
    dr: parts.dr,
    locks: parts.locks,
    cache,
    metrics: parts.metrics,
    logger: parts.logger,
    instanceId: 'api-1',
    timeoutMs: 1000,
  });
  const counted = async (result: string) =>
    (await parts.metrics.failoverTotal.get()).values.find((v) => v.labels.kind === 'media_switch' && v.labels.result === result)?.value ??
    0;
  return { w, parts, primary, backup, cache, failover, counted };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe('MediaFailoverService', () => {
  it('switches to a backend proven writable: every instance follows, the cache is cleared, canaries leave nothing behind', async () => {
    const s = setup();
    const result = await s.failover.switchBackend({ to: 'backup', dryRun: false, force: false }, 'ops');
    expect(result).toMatchObject({ changed: true, from: 'primary', to: 'backup', forced: false, cacheEntriesCleared: 1 });
    expect(result.checks.map((c) => [c.name, c.ok])).toEqual([
      ['bucket_reachable', true],
      ['canary_upload', true],
      ['canary_download_checksum', true],
      ['canary_delete', true],
    ]);
    expect(s.w.store.state?.media).toMatchObject({ active: 'backup', by: 'ops' });
    expect(s.backup.objects.size).toBe(0);
    expect(s.cache.entries.size).toBe(0);
    expect(await s.counted('success')).toBe(1);
    expect(s.w.lockStore.locks.size).toBe(0);
    // Already there: no second change.
    const again = await s.failover.switchBackend({ to: 'backup', dryRun: false, force: false }, 'ops');
    expect(again).toMatchObject({ changed: false });
    expect(s.w.store.state?.version).toBe(1);
  });

  it('a dry run checks and changes nothing', async () => {
    const s = setup();
    const result = await s.failover.switchBackend({ to: 'backup', dryRun: true, force: false }, 'ops');
    expect(result).toMatchObject({ changed: false, dryRun: true, wouldSwitch: true });
    s.backup.failWith = new Error('connect ECONNREFUSED');
    expect(await s.failover.switchBackend({ to: 'backup', dryRun: true, force: false }, 'ops')).toMatchObject({ wouldSwitch: false });
    expect(s.w.store.state).toBeNull();
  });

  it('refuses (412) a backend that fails its checks, naming them, unless forced; never an unconfigured one', async () => {
    const s = setup();
    s.backup.failWith = new Error('connect ECONNREFUSED');
    const err = await rejection(s.failover.switchBackend({ to: 'backup', dryRun: false, force: false }, 'ops'));
    expect(err).toBeInstanceOf(PreconditionFailedError);
    expect((err as PreconditionFailedError).message).toContain('bucket_reachable (connect ECONNREFUSED)');
    expect(s.w.store.state).toBeNull();
    expect(await s.counted('refused')).toBe(1);
    const forced = await s.failover.switchBackend({ to: 'backup', dryRun: false, force: true }, 'ops');
    expect(forced).toMatchObject({ changed: true, forced: true });

    const only = setup(['primary']);
    const refused = await rejection(only.failover.switchBackend({ to: 'backup', dryRun: false, force: true }, 'ops'));
    expect(refused).toBeInstanceOf(PreconditionFailedError);
    expect((refused as Error).message).toContain('media backend backup is not configured');
    expect(only.w.store.state).toBeNull();
  });

  it('409 naming the holder while another media operation holds the lock; nothing changes', async () => {
    const s = setup();
    await s.w.instance('api-2').locks.acquire(MEDIA_LOCK, 'media-switch', { ttlMs: 60_000, busyMessage: 'busy' });
    const err = await rejection(s.failover.switchBackend({ to: 'backup', dryRun: false, force: false }, 'ops'));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).extra).toMatchObject({ lock: 'media', holder: expect.stringMatching(/^api-2:media-switch:/) });
    expect(s.w.store.state).toBeNull();
  });

  it('with Redis down the switch is refused (503) and the lock is not left behind', async () => {
    const s = setup();
    s.w.store.down = true;
    const err = await rejection(s.failover.switchBackend({ to: 'backup', dryRun: false, force: false }, 'ops'));
    expect(err).toBeInstanceOf(DependencyUnavailableError);
    expect(s.w.lockStore.locks.size).toBe(0);
    s.w.store.down = false;
    expect(s.w.store.state).toBeNull();
    expect(s.cache.entries.size).toBe(1);
  });

  it('verify: pass, degraded with the standby backend down, fail with the active one down', async () => {
    const s = setup();
    expect(await s.failover.verify()).toMatchObject({ status: 'pass', active: 'primary' });
    s.backup.failWith = new Error('down');
    expect(await s.failover.verify()).toMatchObject({ status: 'degraded' });
    s.primary.failWith = new Error('down');
    const report = await s.failover.verify();
    expect(report.status).toBe('fail');
    expect(report.backends.find((b) => b.backend === 'primary')?.checks[0]).toMatchObject({
      name: 'bucket_reachable',
      ok: false,
      detail: 'down',
    });
  });
});
