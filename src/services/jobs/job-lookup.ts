import { DependencyUnavailableError, NotFoundError } from '../../http/app-error.ts';
import type { Job } from './job-queue.ts';
import type { JobRecordStore } from './job-records.ts';
import type { SyncJob } from '../media/media-sync.ts';

/**
 * GET /admin/jobs/{id}: every job (media jobs an API instance runs, DR queue jobs a worker runs)
 * is recorded under the same `jobs:<id>` key. The record is read once; its kind decides whose
 * rules show it (each has its own staleness rule).
 */
export class JobLookup {
  constructor(
    private readonly deps: {
      records: JobRecordStore;
      /** Media jobs (kind `media.*`). */
      media: (record: SyncJob) => object;
      /** DR queue jobs (backups, validations); undefined when the job is gone by now. */
      queue: (id: string, job: Job) => Promise<Job | undefined>;
    },
  ) {}

  /** The job as shown, or undefined when a DR queue job vanished while it was read. */
  async find(id: string): Promise<object | undefined> {
    let record: { kind?: unknown } | undefined;
    try {
      record = await this.deps.records.load<{ kind?: unknown }>(id);
    } catch (err) {
      throw new DependencyUnavailableError('redis', 'jobs are kept in Redis, which is unreachable', err);
    }
    if (record === undefined) throw new NotFoundError(`no job ${id}`);
    if (String(record.kind).startsWith('media.')) return this.deps.media(record as SyncJob);
    return this.deps.queue(id, record as Job);
  }
}
