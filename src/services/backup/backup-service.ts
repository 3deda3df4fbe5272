import { AppError, DependencyUnavailableError, NoWorkerError, NotFoundError, PreconditionFailedError } from '../../http/app-error.ts';
import { jobAgeSeconds, JobGroupBusyError, type Job, type JobQueue } from '../jobs/job-queue.ts';
import { backupEnd, type BackupInventory } from './backup-inventory.ts';
import type { ValidationInput } from './backup-validator.ts';
import { recoverable } from './recoverable.ts';
import { createRestorePoint, RestorePointExistsError, type RestorePoint } from './restore-point.ts';

export const BACKUP_JOB = 'backup';
export const VALIDATE_JOB = 'backup.validate';

export interface BackupJobInput {
  type: 'full' | 'diff' | 'incr';
}

/**
 * The backup job holding the backup slot (one at a time: POST /admin/backups answers 409 meanwhile),
 * and whether it has run longer than BACKUP_RUNNING_MAX: reported, never stopped (a big database's
 * full backup may take hours; BACKUP_TIMEOUT_MS, 6 h, is the hard bound).
 */
export interface RunningBackup {
  job: Pick<Job, 'id' | 'kind' | 'status' | 'input' | 'requestedBy' | 'createdAt' | 'startedAt' | 'instanceId'> & {
    /** The worker's last heartbeat (every 5 s while it lives): a live worker whose pgBackRest hangs keeps it fresh. */
    lastHeartbeatAt: string | null;
  };
  /** Since it started (running) or was asked for (queued). */
  ageSeconds: number;
  maxSeconds: number;
  overdue: boolean;
}

/** What API instances do for backups: they ask (jobs for a worker), they never restore. */
export class BackupService {
  constructor(
    private readonly deps: {
      inventory: BackupInventory;
      queue: JobQueue;
      activeDatabaseUrl: () => Promise<string>;
      timeoutMs: number;
      /** BACKUP_RUNNING_MAX: a backup job older than this is reported overdue. */
      runningMaxSeconds?: number;
    },
  ) {}

  /** The backup job queued or running now, or null; undefined when Redis cannot say. */
  async runningBackup(now = Date.now()): Promise<RunningBackup | null | undefined> {
    try {
      const id = await this.deps.queue.holder('backup');
      const job = id ? await this.deps.queue.get(id) : undefined;
      if (!job || (job.status !== 'running' && job.status !== 'queued')) return null;
      const ageSeconds = jobAgeSeconds(job, now);
      const maxSeconds = this.deps.runningMaxSeconds ?? 3600;
      return {
        job: {
          id: job.id,
          kind: job.kind,
          status: job.status,
          input: job.input,
          requestedBy: job.requestedBy,
          createdAt: job.createdAt,
          startedAt: job.startedAt,
          instanceId: job.instanceId,
          lastHeartbeatAt: job.status === 'running' ? job.updatedAt : null,
        },
        ageSeconds,
        maxSeconds,
        overdue: ageSeconds > maxSeconds,
      };
    } catch {
      return undefined;
    }
  }

  /** Live workers per job kind (GET /admin/backups). */
  async workers(): Promise<Record<string, number> | null> {
    try {
      return {
        [BACKUP_JOB]: await this.deps.queue.liveWorkers(BACKUP_JOB),
        [VALIDATE_JOB]: await this.deps.queue.liveWorkers(VALIDATE_JOB),
      };
    } catch {
      return null;
    }
  }

  private async enqueue<I>(kind: string, input: I, group: string, by: string): Promise<Job<I>> {
    try {
      if ((await this.deps.queue.liveWorkers(kind)) === 0) throw new NoWorkerError(kind);
      return await this.deps.queue.enqueue(kind, input, { group, requestedBy: by });
    } catch (err) {
      // A busy group is the caller's answer (a 409 naming the job, made by the route).
      if (err instanceof JobGroupBusyError || err instanceof NoWorkerError) throw err;
      throw new DependencyUnavailableError('redis', 'jobs are queued in Redis, which is unreachable', err);
    }
  }

  async requestBackup(input: BackupJobInput, by: string): Promise<Job<BackupJobInput>> {
    await this.deps.inventory.info(); // 503 with a code when pgBackRest or its repository is not usable
    return this.enqueue(BACKUP_JOB, input, 'backup', by);
  }

  /** Checks the label and the target against the repository before a worker is asked. */
  async requestValidation(input: { backup?: string; targetTime?: string }, by: string): Promise<Job<ValidationInput>> {
    const info = await this.deps.inventory.info(true);
    // latest: the newest backup recovery can start from with this archive (not one on a branch a
    // point-in-time restore abandoned, nor one whose own WAL the archive lacks).
    const good = info.backups.filter(recoverable);
    let label = input.backup ?? 'latest';
    if (label !== 'latest' && !info.backups.some((b) => b.label === label))
      throw new NotFoundError(`backup ${label} is not in the repository`);
    if (label === 'latest' && good.length === 0) {
      const successful = info.backups.filter((b) => !b.error);
      if (successful.length === 0) throw new PreconditionFailedError('the repository holds no successful backup yet', { backups: 0 });
      throw new PreconditionFailedError('no backup in the repository can be recovered with this archive', {
        unrecoverable: successful.map((b) => ({ label: b.label, problem: b.recovery?.problem ?? null })),
      });
    }
    if (input.targetTime) {
      const range = await this.deps.inventory.recoverableRange();
      const target = Date.parse(input.targetTime);
      const usable = { from: range.from, to: range.to };
      if (range.from === null || target < Date.parse(range.from))
        throw new PreconditionFailedError('the target time is before the end of the oldest backup', { usableRange: usable });
      if (range.to === null || target > Date.parse(range.to))
        throw new PreconditionFailedError('the target time is after the newest archived WAL', { usableRange: usable });
      if (label === 'latest') {
        // The newest backup that ended before the target: recovery replays forward from it.
        const before = good.filter((b) => Date.parse(backupEnd(b.stoppedAt)) <= target).at(-1);
        if (!before)
          throw new PreconditionFailedError('no backup that ended before the target time can be recovered with this archive', {
            usableRange: usable,
          });
        label = before.label;
      } else {
        const chosen = info.backups.find((b) => b.label === label)!;
        if (Date.parse(backupEnd(chosen.stoppedAt)) > target)
          throw new PreconditionFailedError(`backup ${label} ended after the target time; choose an older backup or a later target`, {
            usableRange: { from: backupEnd(chosen.stoppedAt), to: range.to },
          });
      }
    }
    return this.enqueue<ValidationInput>(
      VALIDATE_JOB,
      { backup: label, ...(input.targetTime ? { targetTime: new Date(input.targetTime).toISOString() } : {}) },
      'backup-validate',
      by,
    );
  }

  /**
   * A DR job as recorded. A backup given up because its worker died may still have been finished
   * by pgBackRest (it outlives a killed worker): when the repository holds a good backup of that
   * type started after the job, the job is corrected to succeeded, saying so. `record` is the job's
   * record as read from Redis (GET /admin/jobs/{id} reads it once, for every kind of job).
   */
  async job(id: string, record: Job): Promise<Job | undefined> {
    let job: Job | undefined;
    try {
      job = await this.deps.queue.current(id, record);
    } catch (err) {
      throw new DependencyUnavailableError('redis', 'jobs are kept in Redis, which is unreachable', err);
    }
    if (!job || job.kind !== BACKUP_JOB || job.status !== 'failed' || !job.stale || job.reconciled || !job.startedAt) return job;
    const info = await this.deps.inventory.info(true).catch(() => undefined);
    const type = (job.input as BackupJobInput).type;
    // pgBackRest times are whole seconds: a backup started in the second the job started counts.
    // It started while the job ran (before it was given up): a later job's backup is not this one.
    const since = Math.floor(Date.parse(job.startedAt) / 1000) * 1000;
    const until = Date.parse(job.finishedAt ?? job.updatedAt);
    const done = info?.backups.find(
      (b) => !b.error && b.type === type && Date.parse(b.startedAt) >= since && Date.parse(b.startedAt) <= until,
    );
    if (!done) return job;
    return this.deps.queue.reconcile(job, {
      status: 'succeeded',
      result: { type, label: done.label, durationMs: null, backup: done },
      error: null,
      note: `the worker stopped reporting while pgBackRest ran; pgBackRest finished backup ${done.label} without it`,
    });
  }

  async restorePoint(name: string, by: string): Promise<RestorePoint> {
    try {
      return await createRestorePoint(await this.deps.activeDatabaseUrl(), name, this.deps.timeoutMs, by);
    } catch (err) {
      if (err instanceof RestorePointExistsError) throw new AppError(409, 'restore_point_exists', err.message, { name });
      const code = (err as { code?: string }).code;
      if (code === '55000' || code === '42501')
        throw new PreconditionFailedError(`the database cannot create a restore point: ${(err as Error).message}`);
      throw new DependencyUnavailableError('database', 'the active database did not answer', err);
    }
  }
}
