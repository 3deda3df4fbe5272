import type { MediaBackendName } from '../../domain.ts';
import { randomUUID } from 'node:crypto';
import type { ClusterLock, LockLease } from '../dr-state/cluster-lock.ts';
import type { JobRecordStore } from '../jobs/job-records.ts';
import { BadRequestError, DependencyUnavailableError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import { versionObjectName } from './media-repository.ts';
import type { MediaVersionRepository } from './media-version-repository.ts';
import { ObjectMissingError, type ObjectStore } from '../../adapters/object-store.ts';
import { copyVersion } from './version-copier.ts';
import { errorMessage } from '../../lib/error-message.ts';

export const SYNC_LOCK = 'media-sync';
const LOCK_TTL_MS = 30_000;
/** A running job whose instance has not reported progress for this long has failed. */
export const SYNC_STALE_MS = 15_000;
const COPY_ATTEMPTS = 3;

export interface SyncItem {
  key: string;
  version: string;
  size: number;
  sha256: string;
  contentType: string;
  backends: MediaBackendName[];
  reason: 'missing';
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

const PAGE = 1000;
const JOB_TTL_SECONDS = 7 * 24 * 3600;

/**
 * Copies to one backend the current versions (those a key points at) that the metadata does not
 * record on it, reading what to copy from PostgreSQL, not from bucket listings. Versions are
 * immutable and named once, so a copy never replaces newer content and never brings back a
 * deleted key (a deleted key has no current version). Copies stream, a few at a time, and each
 * is recorded when done. Small runs answer inline; large ones become a job in Redis whose
 * progress any instance can report, and which is reported failed, loudly, if its instance stops.
 */
/** A sync job's progress, as saved. */
export type SyncProgress = { id: string } & ReturnType<MediaSyncService['summary']>;

export class MediaSyncService {
  constructor(
    private readonly deps: {
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      versions: MediaVersionRepository;
      locks: ClusterLock;
      jobs: JobRecordStore;
      instanceId: string;
      logger: Logger;
      concurrency: number;
      inlineMax: number;
      /** Told of every saved job state (live events for operators). */
      onProgress?: (job: SyncProgress) => void;
    },
  ) {}

  /** Whether `name` is a configured backend (the route checks a request against it). */
  configured(name: MediaBackendName): boolean {
    return this.deps.stores.has(name);
  }

  private store(name: MediaBackendName): ObjectStore {
    const store = this.deps.stores.get(name);
    if (!store) throw new BadRequestError(`media backend ${name} is not configured`);
    return store;
  }

  async plan(from: MediaBackendName, to: MediaBackendName): Promise<{ scanned: number; legacy: number; items: SyncItem[] }> {
    this.store(from);
    this.store(to);
    try {
      const items: SyncItem[] = [];
      for (let after = ''; ;) {
        const page = await this.deps.versions.currentMissingOn(to, after, PAGE);
        for (const v of page)
          items.push({
            key: v.key,
            version: v.id,
            size: v.size,
            sha256: v.sha256,
            contentType: v.contentType,
            backends: v.backends,
            reason: 'missing',
          });
        if (page.length < PAGE) break;
        after = page.at(-1)!.key;
      }
      return { scanned: items.length, legacy: await this.deps.versions.countLegacy(), items };
    } catch (err) {
      throw new DependencyUnavailableError('database', 'could not read the media metadata', err);
    }
  }

  async sync(input: { from: MediaBackendName; to: MediaBackendName; dryRun: boolean }) {
    if (input.from === input.to) throw new BadRequestError('from and to must differ');
    const { scanned, legacy, items } = await this.plan(input.from, input.to);
    const bytes = items.reduce((n, i) => n + i.size, 0);
    const info = {
      scanned,
      ...(legacy > 0 ? { legacy, legacyHint: 'objects of the old layout are not synced: run npm run media:migrate-layout' } : {}),
    };
    if (input.dryRun)
      return {
        dryRun: true,
        from: input.from,
        to: input.to,
        ...info,
        toCopy: items.length,
        bytes,
        items: items.slice(0, 1000).map(({ key, size, reason }) => ({ key, size, reason })),
      };
    const lease = await this.deps.locks.acquire(SYNC_LOCK, 'sync', { ttlMs: LOCK_TTL_MS, busyMessage: 'a media sync is already running' });
    const job = this.newJob(input.from, input.to, items.length);
    if (items.length <= this.deps.inlineMax) {
      await this.run(job, items, lease);
      return { dryRun: false, async: false, ...info, ...this.summary(job) };
    }
    await this.save(job);
    void this.run(job, items, lease);
    return { dryRun: false, async: true, ...info, job: { id: job.id, kind: job.kind, status: job.status, total: job.total } };
  }

  private summary(job: SyncJob) {
    return { from: job.from, to: job.to, status: job.status, toCopy: job.total, copied: job.copied, bytes: job.bytes, failed: job.failed };
  }

  private newJob(from: MediaBackendName, to: MediaBackendName, total: number): SyncJob {
    const now = new Date().toISOString();
    return {
      id: randomUUID(),
      kind: 'media.sync',
      status: 'running',
      from,
      to,
      total,
      copied: 0,
      bytes: 0,
      failed: [],
      instanceId: this.deps.instanceId,
      startedAt: now,
      updatedAt: now,
      finishedAt: null,
      error: null,
    };
  }

  private async run(job: SyncJob, items: SyncItem[], lease: LockLease): Promise<void> {
    const source = this.store(job.from);
    const target = this.store(job.to);
    const queue = [...items];
    let lastSaved = Date.now();
    const worker = async () => {
      for (let item = queue.shift(); item; item = queue.shift()) {
        // A copy is idempotent: a transient failure (a backend just restarted) is tried again.
        for (let attempt = 1; ; attempt += 1) {
          try {
            // From the named backend, or another that holds the version if it lacks it.
            const sources = [
              source,
              ...item.backends
                .filter((b) => b !== job.from && b !== job.to)
                .map((b) => this.deps.stores.get(b)!)
                .filter(Boolean),
            ];
            await copyFirst(item, sources, target);
            if (!(await this.deps.versions.completeCopy(item.version, job.to))) {
              await target.remove(versionObjectName(item.version)).catch(() => undefined);
            }
            job.copied += 1;
            job.bytes += item.size;
            break;
          } catch (err) {
            if (attempt < COPY_ATTEMPTS) {
              await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
              continue;
            }
            job.failed.push({ key: item.key, error: errorMessage(err) });
            break;
          }
        }
        job.updatedAt = new Date().toISOString();
        // Progress and the lock are refreshed a few times a second, not per object.
        if (Date.now() - lastSaved > 250) {
          lastSaved = Date.now();
          await this.save(job).catch(() => undefined);
          await lease.renew();
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.deps.concurrency, Math.max(1, items.length)) }, worker));
      job.status = job.failed.length === 0 ? 'succeeded' : 'failed';
      if (job.failed.length > 0) job.error = `${job.failed.length} object(s) could not be copied`;
    } catch (err) {
      job.status = 'failed';
      job.error = errorMessage(err);
    } finally {
      job.finishedAt = job.updatedAt = new Date().toISOString();
      await this.save(job).catch(() => undefined);
      await lease.release();
      this.deps.logger[job.status === 'succeeded' ? 'info' : 'error']({ job: this.summary(job) }, `media sync ${job.status}`);
    }
  }

  private async save(job: SyncJob): Promise<void> {
    this.deps.onProgress?.({ id: job.id, ...this.summary(job) });
    await this.deps.jobs.save(job.id, job, JOB_TTL_SECONDS);
  }
}

/**
 * A media job (kind `media.*`) as GET /admin/jobs/{id} shows it. The 15 s rule is media sync's own
 * (it saves progress every item); DR queue jobs have theirs.
 */
export function mediaJobView(job: SyncJob): SyncJob & { stale?: boolean } {
  if (job.status === 'running' && Date.now() - Date.parse(job.updatedAt) > SYNC_STALE_MS) {
    return {
      ...job,
      status: 'failed',
      stale: true,
      error: `the instance running it (${job.instanceId}) made no progress for ${SYNC_STALE_MS / 1000} s; it stopped: run the sync again`,
    };
  }
  return job;
}

async function copyFirst(item: SyncItem, sources: ObjectStore[], target: ObjectStore): Promise<void> {
  let lastError: unknown;
  for (const source of sources) {
    try {
      await copyVersion({ id: item.version, size: item.size, sha256: item.sha256, contentType: item.contentType }, source, target);
      return;
    } catch (err) {
      lastError = err;
      if (!(err instanceof ObjectMissingError)) throw err;
    }
  }
  throw lastError;
}
