import { ConflictError } from './app-error.ts';
import { jobAgeSeconds, JobGroupBusyError } from '../services/jobs/job-queue.ts';

/** Where a client polls a job (GET /admin/jobs/{id}): an HTTP detail, added by routes only. */
export function jobHref(id: string): string {
  return `/admin/jobs/${id}`;
}

/** A service answer that may name a job: the same answer with the job's link added. */
export function withJobHref<T extends object>(answer: T): T {
  if (!('job' in answer)) return answer;
  const job = (answer as { job?: unknown }).job;
  if (typeof job !== 'object' || job === null || typeof (job as { id?: unknown }).id !== 'string') return answer;
  return { ...answer, job: { ...job, href: jobHref((job as { id: string }).id) } };
}

/** Runs `fn`; a job group already taken becomes 409 naming the job that holds it, with its link. */
export async function busyJobAsConflict<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof JobGroupBusyError) {
      const held = err.held;
      const since =
        held && (held.status === 'running' || held.status === 'queued')
          ? {
              kind: held.kind,
              status: held.status,
              startedAt: held.startedAt,
              instanceId: held.instanceId,
              lastHeartbeatAt: held.status === 'running' ? held.updatedAt : null,
              ageSeconds: jobAgeSeconds(held),
            }
          : {};
      throw new ConflictError(err.message, { job: { id: err.holder, href: jobHref(err.holder), ...since } });
    }
    throw err;
  }
}
