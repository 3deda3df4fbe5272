import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { MediaBackendName } from '../config/config.ts';
import type { DrStateStore } from '../dr-state/dr-state-store.ts';
import { BadRequestError, ConflictError, DependencyUnavailableError, NotFoundError } from '../http/app-error.ts';
import type { Logger } from '../logger.ts';
import { CANARY_PREFIX } from './media-failover-service.ts';
import type { ObjectStore, StoredObjectInfo } from './object-store.ts';

export const SYNC_LOCK = 'media-sync';
const LOCK_TTL_MS = 30_000;
/** A running job whose instance has not reported progress for this long has failed. */
export const JOB_STALE_MS = 15_000;
const COPY_ATTEMPTS = 3;

export interface SyncItem {
  key: string;
  size: number;
  reason: 'missing' | 'different';
}

export interface SyncJob {
  id: string;
  kind: 'media.sync';
  status: 'running' | 'succeeded' | 'failed';
  from: MediaBackendName;
  to: MediaBackendName;
  total: number;
  copied: number;
  bytes: number;
  failed: { key: string; error: string }[];
  instanceId: string;
  startedAt: string;
  updatedAt: string;
  finishedAt: string | null;
  error: string | null;
}

/**
 * Copies objects missing or different (size or ETag) on one backend from the other, streaming,
 * a few at a time. Small runs answer inline; large ones become a job in Redis whose progress any
 * instance can report, and which is reported failed, loudly, if its instance stops.
 */
export class MediaSyncService {
  constructor(
    private readonly deps: {
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      lockStore: DrStateStore;
      redis: Redis;
      prefix: string;
      instanceId: string;
      logger: Logger;
      concurrency: number;
      inlineMax: number;
    },
  ) {}

  private store(name: MediaBackendName, field: 'from' | 'to'): ObjectStore {
    const store = this.deps.stores.get(name);
    if (!store) throw new BadRequestError(`media backend ${name} is not configured`, { [field]: ['not configured'] });
    return store;
  }

  async plan(from: MediaBackendName, to: MediaBackendName): Promise<{ scanned: number; items: SyncItem[] }> {
    const source = this.store(from, 'from');
    const target = this.store(to, 'to');
    const existing = new Map<string, StoredObjectInfo>();
    try {
      for await (const object of target.list('')) existing.set(object.key, object);
      const items: SyncItem[] = [];
      let scanned = 0;
      for await (const object of source.list('')) {
        if (object.key.startsWith(CANARY_PREFIX)) continue;
        scanned += 1;
        const there = existing.get(object.key);
        if (!there) items.push({ key: object.key, size: object.size, reason: 'missing' });
        else if (there.size !== object.size || there.etag !== object.etag) items.push({ key: object.key, size: object.size, reason: 'different' });
      }
      return { scanned, items };
    } catch (err) {
      throw new DependencyUnavailableError('media', `could not list ${from} and ${to}`, err);
    }
  }

  async sync(input: { from: MediaBackendName; to: MediaBackendName; dryRun: boolean }) {
    if (input.from === input.to) throw new BadRequestError('from and to must differ', { to: ['must differ from from'] });
    const { scanned, items } = await this.plan(input.from, input.to);
    const bytes = items.reduce((n, i) => n + i.size, 0);
    if (input.dryRun) return { dryRun: true, from: input.from, to: input.to, scanned, toCopy: items.length, bytes, items: items.slice(0, 1000) };
    const owner = `${this.deps.instanceId}:sync:${randomUUID()}`;
    if (!(await this.deps.lockStore.acquireLock(SYNC_LOCK, owner, LOCK_TTL_MS))) {
      throw new ConflictError('a media sync is already running', { lock: SYNC_LOCK, holder: await this.deps.lockStore.lockHolder(SYNC_LOCK).catch(() => null) });
    }
    const job = this.newJob(input.from, input.to, items.length);
    if (items.length <= this.deps.inlineMax) {
      await this.run(job, items, owner);
      return { dryRun: false, async: false, scanned, ...this.summary(job) };
    }
    await this.save(job);
    void this.run(job, items, owner);
    return { dryRun: false, async: true, scanned, job: { id: job.id, status: job.status, total: job.total, href: `/admin/jobs/${job.id}` } };
  }

  private summary(job: SyncJob) {
    return { from: job.from, to: job.to, status: job.status, toCopy: job.total, copied: job.copied, bytes: job.bytes, failed: job.failed };
  }

  private newJob(from: MediaBackendName, to: MediaBackendName, total: number): SyncJob {
    const now = new Date().toISOString();
    return { id: randomUUID(), kind: 'media.sync', status: 'running', from, to, total, copied: 0, bytes: 0, failed: [], instanceId: this.deps.instanceId, startedAt: now, updatedAt: now, finishedAt: null, error: null };
  }

  private async run(job: SyncJob, items: SyncItem[], owner: string): Promise<void> {
    const source = this.store(job.from, 'from');
    const target = this.store(job.to, 'to');
    const queue = [...items];
    const worker = async () => {
      for (let item = queue.shift(); item; item = queue.shift()) {
        // A copy is idempotent: a transient failure (a backend just restarted) is tried again.
        for (let attempt = 1; ; attempt += 1) {
          try {
            const contentType = (await source.stat(item.key))?.contentType ?? 'application/octet-stream';
            await target.put(item.key, await source.get(item.key), item.size, contentType);
            job.copied += 1;
            job.bytes += item.size;
            break;
          } catch (err) {
            if (attempt < COPY_ATTEMPTS) {
              await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
              continue;
            }
            job.failed.push({ key: item.key, error: err instanceof Error ? err.message : String(err) });
            break;
          }
        }
        job.updatedAt = new Date().toISOString();
        await this.save(job).catch(() => undefined);
        await this.deps.lockStore.extendLock(SYNC_LOCK, owner, LOCK_TTL_MS).catch(() => undefined);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.deps.concurrency, Math.max(1, items.length)) }, worker));
      job.status = job.failed.length === 0 ? 'succeeded' : 'failed';
      if (job.failed.length > 0) job.error = `${job.failed.length} object(s) could not be copied`;
    } catch (err) {
      job.status = 'failed';
      job.error = err instanceof Error ? err.message : String(err);
    } finally {
      job.finishedAt = job.updatedAt = new Date().toISOString();
      await this.save(job).catch(() => undefined);
      await this.deps.lockStore.releaseLock(SYNC_LOCK, owner).catch(() => undefined);
      this.deps.logger[job.status === 'succeeded' ? 'info' : 'error']({ job: this.summary(job) }, `media sync ${job.status}`);
    }
  }

  /** Told of every saved job state (live events for operators). */
  onProgress?: (job: { id: string } & ReturnType<MediaSyncService['summary']>) => void;

  private async save(job: SyncJob): Promise<void> {
    this.onProgress?.({ id: job.id, ...this.summary(job) });
    await this.deps.redis.set(`${this.deps.prefix}jobs:${job.id}`, JSON.stringify(job), 'EX', 7 * 24 * 3600);
  }

  async job(id: string): Promise<SyncJob & { stale?: boolean }> {
    let raw: string | null;
    try {
      raw = await this.deps.redis.get(`${this.deps.prefix}jobs:${id}`);
    } catch (err) {
      throw new DependencyUnavailableError('redis', 'jobs are kept in Redis, which is unreachable', err);
    }
    if (raw === null) throw new NotFoundError(`no job ${id}`);
    const job = JSON.parse(raw) as SyncJob;
    if (job.status === 'running' && Date.now() - Date.parse(job.updatedAt) > JOB_STALE_MS) {
      return { ...job, status: 'failed', stale: true, error: `the instance running it (${job.instanceId}) made no progress for ${JOB_STALE_MS / 1000} s; it stopped: run the sync again` };
    }
    return job;
  }
}
