import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { classifyError, ProbeTimeoutError, type ProbeError } from './probe-error.ts';

export interface ProbeResult<T> {
  ok: boolean;
  latencyMs: number;
  checkedAt: Date;
  data?: T;
  error?: ProbeError;
}

/** A probe gets an AbortSignal that fires at the timeout; it must then close its own connection. */
export type ProbeFn<T> = (signal: AbortSignal) => Promise<T>;

export interface ProbeRunnerOptions<T = unknown> {
  dependency: string;
  /** Label value for sav3_dependency_up, e.g. the database target or media backend. */
  target: () => string;
  timeoutMs: number;
  metrics: Metrics;
  logger: Logger;
  now?: () => number;
  /** Called with every result (e.g. to track replication positions). */
  onResult?: (result: ProbeResult<T>) => void;
}

/**
 * Runs one dependency probe at a time: concurrent callers share the in-flight run, and every run
 * answers within `timeoutMs`, aborting the probe's own connection when it does not.
 */
export class ProbeRunner<T> {
  private inFlight?: Promise<ProbeResult<T>>;
  private last?: ProbeResult<T>;
  private readonly now: () => number;

  constructor(
    private readonly probe: ProbeFn<T>,
    private readonly options: ProbeRunnerOptions<T>,
  ) {
    this.now = options.now ?? Date.now;
  }

  latest(): ProbeResult<T> | undefined {
    return this.last;
  }

  /** The cached result when younger than maxAgeMs, else a (shared) fresh run. */
  async get(maxAgeMs: number): Promise<ProbeResult<T>> {
    const last = this.last;
    if (last && this.now() - last.checkedAt.getTime() <= maxAgeMs) return last;
    return this.run();
  }

  run(): Promise<ProbeResult<T>> {
    this.inFlight ??= this.execute().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Drops the cached result, e.g. after the target it describes changed. */
  invalidate(): void {
    this.last = undefined;
  }

  private async execute(): Promise<ProbeResult<T>> {
    const { timeoutMs, metrics, dependency } = this.options;
    const started = performance.now();
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new ProbeTimeoutError(timeoutMs);
        controller.abort(err);
        reject(err);
      }, timeoutMs);
    });
    let result: ProbeResult<T>;
    try {
      const data = await Promise.race([this.probe(controller.signal), timeout]);
      result = { ok: true, data, latencyMs: elapsed(started), checkedAt: new Date(this.now()) };
    } catch (err) {
      result = { ok: false, error: classifyError(err), latencyMs: elapsed(started), checkedAt: new Date(this.now()) };
    } finally {
      clearTimeout(timer);
      if (!controller.signal.aborted) controller.abort();
    }
    metrics.dependencyCheckDuration.observe({ dependency }, result.latencyMs / 1000);
    metrics.dependencyUp.set({ dependency, target: this.options.target() }, result.ok ? 1 : 0);
    this.logTransition(result);
    this.last = result;
    this.options.onResult?.(result);
    return result;
  }

  private logTransition(result: ProbeResult<T>): void {
    const before = this.last;
    if (before && before.ok === result.ok) return;
    const fields = { dependency: this.options.dependency, target: this.options.target(), latencyMs: result.latencyMs };
    // A failing dependency heals itself or is acted on through the DR API: WARN, not ERROR.
    if (result.ok) this.options.logger.info(fields, 'dependency is up');
    else this.options.logger.warn({ ...fields, errorCode: result.error?.code, err: result.error?.message }, 'dependency is down');
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
