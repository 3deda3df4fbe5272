import { randomUUID } from 'node:crypto';

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed';

/** A DR job in Redis, under the same `jobs:<id>` keys as media sync jobs (GET /admin/jobs/:id). */
export interface Job<I = unknown, R = unknown> {
  id: string;
  kind: string;
  status: JobStatus;
  input: I;
  result: R | null;
  error: string | null;
  /** The exclusive group the job holds while queued or running (one job per group at a time). */
  group: string | null;
  instanceId: string | null;
  requestedBy: string;
  createdAt: string;
  startedAt: string | null;
  updatedAt: string;
  finishedAt: string | null;
  /** Set when the job was given up because its worker stopped reporting (see STALE_MESSAGES). */
  stale?: boolean;
  /** Set when a later look at the outcome (the repository) corrected what was recorded. */
  reconciled?: string;
}

/** A running job whose worker has not reported for this long is reported failed (its worker stopped). */
export const JOB_HEARTBEAT_MS = 5000;
export const JOB_STALE_MS = 30_000;
/**
 * Per kind: what a job given up for lack of heartbeats (its worker died) means. Every queue job
 * heartbeats every JOB_HEARTBEAT_MS; JOB_STALE_MS (30 s, the README's rule) without one is death.
 */
const STALE_MESSAGES: Record<string, (worker: string) => string> = {
  backup: (w) =>
    `the worker running it (${w}) stopped reporting for ${JOB_STALE_MS / 1000} s and the job was given up; pgBackRest may still have finished the backup without it: GET /admin/backups lists what the repository holds (this job is corrected when it shows up)`,
  'backup.validate': (w) =>
    `the worker running it (${w}) stopped reporting for ${JOB_STALE_MS / 1000} s and the validation was given up; its scratch cluster is removed when a worker starts: run the validation again`,
};
export function staleMessage(kind: string, worker: string | null): string {
  const w = worker ?? 'unknown';
  return (
    STALE_MESSAGES[kind] ??
    ((x: string) => `the worker running it (${x}) stopped reporting for ${JOB_STALE_MS / 1000} s; the job was given up`)
  )(w);
}

/** How long a queued job holds its group while no worker takes it, then while a worker runs it. */
const QUEUED_HOLD_MS = 3_600_000;
const RUNNING_HOLD_MS = JOB_STALE_MS * 2;
const JOB_TTL_SECONDS = 30 * 24 * 3600;

// Enqueue: take the group (if any) and queue the job in one step, so two requests never both win.
const ENQUEUE = `
if KEYS[2] ~= '' then
  local holder = redis.call('GET', KEYS[2])
  if holder then return holder end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
return false`;

// Claim: pop the oldest queued id and mark it running for this worker in one step; a job popped by
// one worker is never seen by another.
const CLAIM = `
for i = 1, 100 do
  local id = redis.call('LPOP', KEYS[1])
  if not id then return false end
  local key = ARGV[1] .. id
  local raw = redis.call('GET', key)
  if raw then
    local job = cjson.decode(raw)
    if job.status == 'queued' then
      job.status = 'running'
      job.instanceId = ARGV[2]
      job.startedAt = ARGV[3]
      job.updatedAt = ARGV[3]
      local out = cjson.encode(job)
      redis.call('SET', key, out, 'KEEPTTL')
      if job.group ~= cjson.null and job.group ~= nil then
        redis.call('PEXPIRE', ARGV[4] .. job.group, ARGV[5])
      end
      return out
    end
  end
end
return false`;

// Give up a running job whose heartbeat is still the one seen (a late heartbeat or finish wins):
// recorded failed and stale, and its group released.
const GIVE_UP = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local job = cjson.decode(raw)
if job.status ~= 'running' or job.updatedAt ~= ARGV[1] then return raw end
job.status = 'failed'
job.stale = true
job.error = ARGV[2]
job.finishedAt = ARGV[3]
local out = cjson.encode(job)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
if job.group ~= cjson.null and job.group ~= nil then
  local g = ARGV[4] .. job.group
  if redis.call('GET', g) == job.id then redis.call('DEL', g) end
end
return out`;

// Release a group only if this job still holds it.
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
const EXTEND = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;

/** The Redis commands the queue uses (the port); an ioredis client is one. */
export interface JobQueueRedis {
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  set(key: string, value: string, exToken: 'EX', seconds: number): Promise<unknown>;
  get(key: string): Promise<string | null>;
  zadd(key: string, score: number, member: string): Promise<unknown>;
  zrevrange(key: string, start: number, stop: number): Promise<string[]>;
  zcount(key: string, min: number | string, max: number | string): Promise<number>;
  zrem(key: string, ...members: string[]): Promise<unknown>;
  zremrangebyscore(key: string, min: number | string, max: number | string): Promise<unknown>;
  pexpire(key: string, ms: number): Promise<unknown>;
}

/** Workers announce themselves every JOB_HEARTBEAT_MS; one not seen for this long is gone. */
export const WORKER_LIVE_MS = 15_000;

export class JobGroupBusyError extends Error {
  constructor(
    readonly group: string,
    readonly holder: string,
    /** The holder's record, when it could be read: the 409 says since when and where it runs. */
    readonly held?: Job,
  ) {
    super(busyMessage(group, holder, held));
  }
}

/** How long a job has been running (or queued), in whole seconds, at `now`. */
export function jobAgeSeconds(job: Pick<Job, 'status' | 'startedAt' | 'createdAt'>, now = Date.now()): number {
  const since = Date.parse((job.status === 'running' ? job.startedAt : null) ?? job.createdAt);
  return Math.max(0, Math.round((now - since) / 1000));
}

/** `1h 02m 05s` */
export function humanSeconds(total: number): string {
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h > 0
    ? `${h}h ${String(m).padStart(2, '0')}m ${String(s).padStart(2, '0')}s`
    : m > 0
      ? `${m}m ${String(s).padStart(2, '0')}s`
      : `${s}s`;
}

function busyMessage(group: string, holder: string, held: Job | undefined): string {
  if (!held || (held.status !== 'running' && held.status !== 'queued')) return `a ${group} job is already queued or running (${holder})`;
  const age = humanSeconds(jobAgeSeconds(held));
  return held.status === 'running'
    ? `a ${group} job is already running (${holder}): for ${age}, since ${held.startedAt}, on ${held.instanceId ?? 'an unknown worker'}`
    : `a ${group} job is already queued (${holder}): for ${age}, no worker has taken it yet`;
}

/**
 * The shared job mechanism: API instances enqueue, workers claim. Each job is claimed by exactly
 * one worker (an atomic pop-and-mark in Redis); jobs of one group run one at a time.
 */
export class JobQueue {
  constructor(
    private readonly redis: JobQueueRedis,
    private readonly prefix: string,
  ) {}

  private key(id: string): string {
    return `${this.prefix}jobs:${id}`;
  }
  private groupKey(group: string): string {
    return `${this.prefix}jobs:group:${group}`;
  }
  private get queueKey(): string {
    return `${this.prefix}jobs:queue`;
  }

  async enqueue<I>(kind: string, input: I, options: { group?: string; requestedBy: string }): Promise<Job<I>> {
    const now = new Date().toISOString();
    const job: Job<I> = {
      id: randomUUID(),
      kind,
      status: 'queued',
      input,
      result: null,
      error: null,
      group: options.group ?? null,
      instanceId: null,
      requestedBy: options.requestedBy,
      createdAt: now,
      startedAt: null,
      updatedAt: now,
      finishedAt: null,
    };
    const tryEnqueue = async () =>
      (await this.redis.eval(
        ENQUEUE,
        3,
        this.key(job.id),
        options.group ? this.groupKey(options.group) : '',
        this.queueKey,
        job.id,
        JSON.stringify(job),
        JOB_TTL_SECONDS,
        QUEUED_HOLD_MS,
      )) as string | null;
    let holder = await tryEnqueue();
    let held: Job | undefined;
    if (holder) {
      // A holder whose worker died (given up now) or that finished without releasing holds nothing.
      held = await this.get(holder);
      if (!held || held.status === 'succeeded' || held.status === 'failed') {
        await this.redis.eval(RELEASE, 1, this.groupKey(options.group!), holder);
        holder = await tryEnqueue();
        held = holder ? await this.get(holder) : undefined;
      }
    }
    if (holder) throw new JobGroupBusyError(options.group!, holder, held);
    await this.redis.zadd(`${this.prefix}jobs:index:${kind}`, Date.now(), job.id);
    return job;
  }

  /** Takes the oldest queued job for this worker, or undefined when there is none. */
  async claim(instanceId: string): Promise<Job | undefined> {
    const raw = (await this.redis.eval(
      CLAIM,
      1,
      this.queueKey,
      `${this.prefix}jobs:`,
      instanceId,
      new Date().toISOString(),
      `${this.prefix}jobs:group:`,
      RUNNING_HOLD_MS,
    )) as string | null;
    return raw ? normalize(JSON.parse(raw) as Job) : undefined;
  }

  /** The worker is alive and the job progresses: keeps the group held and the job fresh. */
  async heartbeat(job: Job): Promise<void> {
    job.updatedAt = new Date().toISOString();
    await this.save(job);
    if (job.group) await this.redis.eval(EXTEND, 1, this.groupKey(job.group), job.id, RUNNING_HOLD_MS);
  }

  async finish(job: Job, outcome: { status: 'succeeded' | 'failed'; result?: unknown; error?: string }): Promise<void> {
    job.status = outcome.status;
    job.result = outcome.result ?? job.result;
    job.error = outcome.error ?? null;
    job.finishedAt = job.updatedAt = new Date().toISOString();
    await this.save(job);
    if (job.group) await this.redis.eval(RELEASE, 1, this.groupKey(job.group), job.id);
  }

  private async save(job: Job): Promise<void> {
    await this.redis.set(this.key(job.id), JSON.stringify(job), 'EX', JOB_TTL_SECONDS);
  }

  /**
   * A job as stored. A running job without heartbeat for JOB_STALE_MS is given up: recorded failed
   * (with its kind's message) and its group released, so the next request is not refused naming it.
   */
  async get(id: string): Promise<Job | undefined> {
    const raw = await this.redis.get(this.key(id));
    if (raw === null) return undefined;
    return this.current(id, JSON.parse(raw) as Job);
  }

  /** A job record already read from its `jobs:<id>` key, as get() answers it (given up if stale). */
  async current(id: string, record: Job): Promise<Job | undefined> {
    const job = normalize(record);
    if (job.status === 'running' && Date.now() - Date.parse(job.updatedAt) > JOB_STALE_MS) {
      const out = (await this.redis.eval(
        GIVE_UP,
        1,
        this.key(id),
        job.updatedAt,
        staleMessage(job.kind, job.instanceId),
        new Date().toISOString(),
        `${this.prefix}jobs:group:`,
      )) as string | null;
      return out ? normalize(JSON.parse(out) as Job) : undefined;
    }
    return job;
  }

  /** Corrects a finished job's record when a later look shows what really happened. */
  async reconcile(
    job: Job,
    outcome: { status: 'succeeded' | 'failed'; result: unknown; error: string | null; note: string },
  ): Promise<Job> {
    const next: Job = { ...job, status: outcome.status, result: outcome.result, error: outcome.error, reconciled: outcome.note };
    next.updatedAt = new Date().toISOString();
    await this.save(next);
    return next;
  }

  /** The newest jobs of one kind. */
  async recent(kind: string, limit: number): Promise<Job[]> {
    const ids = await this.redis.zrevrange(`${this.prefix}jobs:index:${kind}`, 0, limit - 1);
    const jobs = await Promise.all(ids.map((id) => this.get(id)));
    return jobs.filter((j): j is Job => j !== undefined);
  }

  private workersKey(kind: string): string {
    return `${this.prefix}workers:${kind}`;
  }

  /** A worker is alive and takes jobs of these kinds (called every JOB_HEARTBEAT_MS). */
  async announce(instanceId: string, kinds: readonly string[]): Promise<void> {
    const now = Date.now();
    for (const kind of kinds) {
      const key = this.workersKey(kind);
      await this.redis.zadd(key, now, instanceId);
      await this.redis.zremrangebyscore(key, '-inf', now - 24 * 3600_000);
      await this.redis.pexpire(key, 24 * 3600_000);
    }
  }

  /** A worker stops: it no longer counts as one that takes these kinds. */
  async withdraw(instanceId: string, kinds: readonly string[]): Promise<void> {
    for (const kind of kinds) await this.redis.zrem(this.workersKey(kind), instanceId);
  }

  /** How many workers that take this kind of job were seen within WORKER_LIVE_MS. */
  async liveWorkers(kind: string): Promise<number> {
    return this.redis.zcount(this.workersKey(kind), Date.now() - WORKER_LIVE_MS, '+inf');
  }

  /** The job currently holding a group, if any (for a 409 naming it). */
  async holder(group: string): Promise<string | null> {
    return this.redis.get(this.groupKey(group));
  }
}

// cjson turns an empty object into an empty array and null into a sentinel: undo that.
function normalize(job: Job): Job {
  for (const field of ['result', 'error', 'group', 'instanceId', 'startedAt', 'finishedAt'] as const) {
    if (job[field] === undefined) (job as unknown as Record<string, unknown>)[field] = null;
  }
  if (Array.isArray(job.input) && job.input.length === 0) job.input = {};
  return job;
}
