import type { Logger } from '../../logger.ts';
import { JOB_HEARTBEAT_MS, type Job, type JobQueue } from './job-queue.ts';
import { errorMessage } from '../../lib/error-message.ts';

export type JobHandler = (job: Job) => Promise<unknown>;

/**
 * A worker's loop: claim one job at a time, run its handler, keep it alive with heartbeats, record
 * the outcome. A job whose kind this worker does not know fails at once (never silently dropped).
 */
export class JobRunner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  /** Jobs this runner has run (ids), for the metrics and tests. */
  readonly ran: string[] = [];

  constructor(
    private readonly deps: {
      queue: JobQueue;
      handlers: ReadonlyMap<string, JobHandler>;
      instanceId: string;
      logger: Logger;
      pollMs: number;
      onFinished?: (job: Job) => void;
    },
  ) {}

  private presence: NodeJS.Timeout | undefined;

  /** Tells API instances this worker is alive and which jobs it takes (they refuse jobs no worker takes). */
  async announce(): Promise<void> {
    await this.deps.queue.announce(this.deps.instanceId, [...this.deps.handlers.keys()]);
  }

  start(): void {
    this.stopped = false;
    this.presence = setInterval(
      () => void this.announce().catch((err: unknown) => this.deps.logger.warn({ err }, 'could not announce this worker (Redis)')),
      JOB_HEARTBEAT_MS,
    );
    this.presence.unref();
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => {
        this.running = undefined;
      });
    }, ms);
  }

  private async tick(): Promise<void> {
    let job: Job | undefined;
    try {
      job = await this.deps.queue.claim(this.deps.instanceId);
    } catch (err) {
      this.deps.logger.warn({ err }, 'could not take a job (Redis); trying again');
    }
    if (job) await this.runJob(job);
    this.schedule(job ? 0 : this.deps.pollMs);
  }

  private async runJob(job: Job): Promise<void> {
    const { queue, logger } = this.deps;
    this.ran.push(job.id);
    const handler = this.deps.handlers.get(job.kind);
    const beat = setInterval(() => void queue.heartbeat(job).catch(() => undefined), JOB_HEARTBEAT_MS);
    logger.info({ jobId: job.id, kind: job.kind }, 'job started');
    try {
      if (!handler) throw new Error(`this worker does not run ${job.kind} jobs`);
      const result = await handler(job);
      clearInterval(beat);
      await queue.finish(job, { status: 'succeeded', result });
      logger.info({ jobId: job.id, kind: job.kind }, 'job succeeded');
    } catch (err) {
      clearInterval(beat);
      const message = publicJobError(err);
      const result = (err as { report?: unknown }).report;
      await queue
        .finish(job, { status: 'failed', error: message, result })
        .catch((e: unknown) => logger.error({ err: e, jobId: job.id }, 'could not record a failed job'));
      logger.error({ jobId: job.id, kind: job.kind, err }, 'job failed');
    } finally {
      this.deps.onFinished?.(job);
    }
  }

  /** Stops taking jobs and waits for the one running (if any) to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.presence);
    await this.deps.queue.withdraw(this.deps.instanceId, [...this.deps.handlers.keys()]).catch(() => undefined);
    await this.running;
  }
}

/**
 * A job's error as viewers read it: the first line of the message, without source paths, at most
 * 500 characters. A database driver's own message (Prisma: the invocation, source paths, code
 * excerpts) becomes its code only; the whole error goes to the log.
 */
export function publicJobError(err: unknown): string {
  if (err instanceof Error && /^PrismaClient/.test(err.constructor.name)) {
    const code = (err as { code?: unknown }).code;
    return `a database error${typeof code === 'string' ? ` (${code})` : ''}; the worker's log has the details`;
  }
  const text = errorMessage(err);
  const first =
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? 'failed';
  return first.replace(/(?:\/[\w.@+-]+)+\.(?:[cm]?[jt]s)(?::\d+){0,2}/g, '<source>').slice(0, 500);
}
