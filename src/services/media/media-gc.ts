import type { MediaBackendName } from '../../domain.ts';
import type { Logger } from '../../logger.ts';
import { versionObjectName } from './media-repository.ts';
import { isVersionObjectName, VERSION_PREFIX, type MediaVersionRepository } from './media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';

/** How long the record of a retired continuous-backup row is kept. */
const RETIRED_KEPT_MS = 7 * 24 * 3600 * 1000;

/**
 * Garbage collection of media content. A version replaced (overwritten or deleted) longer than
 * the grace period ago loses its row, then its content on every backend. Content no row
 * references (a refused write, a crash between upload and commit, a removal that failed) is
 * found by the orphan sweep, which lists versions and removes unreferenced ones older than the
 * grace period. Readers holding an older version (a stale cache entry, a stream in progress) keep
 * working for the grace period.
 */
export class MediaGarbageCollector {
  private timer?: NodeJS.Timeout;
  private busy = false;
  private ticks = 0;

  constructor(
    private readonly deps: {
      versions: MediaVersionRepository;
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      backendDown?: (backend: MediaBackendName) => boolean;
      graceMs: number;
      intervalMs: number;
      /** Every this many ticks, the orphan sweep lists the buckets. */
      sweepEvery: number;
      logger: Logger;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.collect();
      this.ticks += 1;
      if (this.ticks % this.deps.sweepEvery === 0) await this.sweepOrphans();
    } catch (err) {
      this.deps.logger.warn({ err: String(err) }, 'media garbage collection failed; it runs again');
    } finally {
      this.busy = false;
    }
  }

  /** Removes versions replaced longer than the grace period ago; returns how many. */
  async collect(): Promise<number> {
    let total = 0;
    for (;;) {
      const gone = await this.deps.versions.collect(this.deps.graceMs, 100);
      for (const version of gone) {
        // Every backend, not only those recorded: a copy may have finished without being recorded.
        await Promise.all([...this.deps.stores.values()].map((s) => s.remove(versionObjectName(version.id)).catch(() => undefined)));
      }
      total += gone.length;
      if (gone.length < 100) break;
    }
    total += await this.collectLegacy();
    await this.deps.versions.purgeTombstones(this.deps.graceMs);
    await this.deps.versions.purgeRetired(RETIRED_KEPT_MS);
    return total;
  }

  /**
   * Removes old-layout objects (content stored under the key by an earlier release) whose key was
   * deleted or overwritten longer than the grace period ago, on every backend, unless a row
   * references them again. An entry is forgotten only once every backend removed the object (a
   * backend that is down keeps it for the next run). Returns how many objects were removed.
   */
  async collectLegacy(): Promise<number> {
    let removed = 0;
    for (;;) {
      const due = await this.deps.versions.legacyGarbage(this.deps.graceMs, 100);
      const done: string[] = [];
      for (const { key, referenced } of due) {
        if (referenced) {
          done.push(key);
          continue;
        }
        const results = await Promise.all(
          [...this.deps.stores].map(async ([name, store]) => {
            if (this.deps.backendDown?.(name)) return false;
            return store.remove(key).then(
              () => true,
              () => false,
            );
          }),
        );
        if (results.every(Boolean)) {
          done.push(key);
          removed += 1;
        }
      }
      await this.deps.versions.dropLegacyGarbage(done, this.deps.graceMs);
      // Entries kept for a backend that is down come back first next time: stop rather than loop.
      if (due.length < 100 || done.length < due.length) break;
    }
    if (removed > 0) this.deps.logger.info({ removed }, 'old-layout media objects of deleted or overwritten keys removed');
    return removed;
  }

  /**
   * Removes content no row references, older than the grace period; returns counts per backend.
   * Foreign objects under `v/` (not a version name) are logged, never removed.
   */
  async sweepOrphans(): Promise<Record<string, number>> {
    const removed: Record<string, number> = {};
    const foreign: Record<string, number> = {};
    for (const [name, store] of this.deps.stores) {
      if (this.deps.backendDown?.(name)) continue;
      removed[name] = 0;
      for await (const batch of orphans(store, this.deps.versions, this.deps.graceMs)) {
        for (const key of batch.orphans) {
          await store.remove(key);
          removed[name] += 1;
        }
        if (batch.foreign.length > 0) {
          foreign[name] = (foreign[name] ?? 0) + batch.foreign.length;
          this.deps.logger.warn(
            { backend: name, objects: batch.foreign.slice(0, 10) },
            'objects under v/ that are not media versions: kept; remove them by hand if they are not wanted',
          );
        }
      }
    }
    if (Object.values(removed).some((n) => n > 0)) this.deps.logger.info({ removed }, 'orphaned media content removed');
    if (Object.keys(foreign).length > 0) this.deps.logger.warn({ foreign }, 'foreign objects under v/ found (not removed)');
    return removed;
  }
}

export interface OrphanBatch {
  /** Version objects no row references, older than the grace period: garbage. */
  orphans: string[];
  /**
   * Objects under `v/` whose name is not a version name (`v/<uuid>`) and that no old-layout row
   * references: something else wrote them. Reported, never deleted automatically.
   */
  foreign: string[];
}

/**
 * Batches of objects under `v/` on `store`: version objects that no row references and that are
 * older than `graceMs`, and foreign objects. An object an old-layout row names (content stored
 * under a key that looks like `v/<uuid>`) is neither. One odd name never breaks a batch.
 */
export async function* orphans(store: ObjectStore, versions: MediaVersionRepository, graceMs: number): AsyncIterable<OrphanBatch> {
  const cutoff = Date.now() - graceMs;
  let batch: string[] = [];
  const flush = async (): Promise<OrphanBatch> => {
    const known = await versions.referenced(batch);
    const unknown = batch.filter((name) => !known.has(name));
    batch = [];
    return { orphans: unknown.filter(isVersionObjectName), foreign: unknown.filter((name) => !isVersionObjectName(name)) };
  };
  for await (const object of store.list(VERSION_PREFIX)) {
    if (!object.lastModified || object.lastModified.getTime() > cutoff) continue;
    batch.push(object.key);
    if (batch.length >= 500) yield await flush();
  }
  if (batch.length > 0) yield await flush();
}
