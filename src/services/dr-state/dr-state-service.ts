import { ConflictError, DependencyUnavailableError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { DrMetrics } from '../../metrics/metrics.ts';
import { INITIAL_STATE, type DrState, type InstanceHeartbeat } from './dr-state.ts';
import type { DrStateFile } from './dr-state-file.ts';
import type { DrStateStore } from './dr-state-store.ts';

export type StateListener = (state: DrState, previous: DrState) => void | Promise<void>;

/** The pub/sub seam: calls back on every published change, and after every reconnect. */
export type Subscribe = (onChange: () => void) => { close(): Promise<void> };

export interface DrStateServiceDeps {
  stateStore: DrStateStore;
  subscribe: Subscribe;
  instanceId: string;
  /** Safety-net re-read (pub/sub drops messages across reconnects) and heartbeat period. */
  syncIntervalMs: number;
  metrics: DrMetrics;
  logger: Logger;
  /** The local copy of the last applied state (DR_STATE_FILE); none in some service tests. */
  file?: DrStateFile;
  /**
   * The lease (DR_STATE_LEASE_MS): writes are refused once the state was last confirmed in Redis
   * longer ago than this; an instance whose heartbeat is older is not waited for by a change.
   */
  leaseMs?: number;
  now?: () => number;
}

export const DEFAULT_LEASE_MS = 5000;
/** Allowance for clock skew between instances when judging another instance's heartbeat age. */
export const LEASE_SKEW_MS = 1000;

/** What a change's wait for every live instance found. */
export interface Propagation {
  /** Instances (heartbeat in the last 30 s) that report the version applied, of all listed. */
  applied: number;
  total: number;
  instances: InstanceHeartbeat[];
  /** Every live instance (heartbeat within the lease) applied the version. */
  complete: boolean;
  /** Live instances that did not report the version within the wait: they may still act on the previous state. */
  notApplied: string[];
  /** Instances whose heartbeat is older than the lease: by the lease rule they refuse writes until they re-confirm the state (and so apply this version first). */
  stale: { id: string; appliedVersion: number; lastSeen: string }[];
  leaseMs: number;
  waitedMs: number;
}

/** Where the state this instance follows came from; `unknown` until Redis or the file answered. */
export type StateSource = 'unknown' | 'store' | 'file';

export interface Change {
  before: DrState;
  after: DrState;
}

/**
 * Keeps this instance's in-memory copy of the shared DR state current: pub/sub for speed, a
 * periodic re-read as a safety net. Request paths read the copy and never wait on Redis. When Redis
 * comes back empty, the newest state any instance holds is put back. Changes are compare-and-set
 * on the version: two racing writers cannot both win.
 */
export class DrStateService {
  private state: DrState = INITIAL_STATE;
  private readonly listeners: StateListener[] = [];
  private timer?: NodeJS.Timeout;
  private subscription?: { close(): Promise<void> };
  private storeUp = true;
  private syncing?: Promise<void>;
  private source: StateSource = 'unknown';
  /** When the shared state was last confirmed in Redis (read, or written by compare-and-set). */
  private confirmedAt: number | null = null;
  private leaseTimer?: NodeJS.Timeout;
  private readonly leaseListeners: (() => void)[] = [];

  constructor(private readonly deps: DrStateServiceDeps) {
    deps.metrics.drStateVersion.set(0);
  }

  current(): DrState {
    return this.state;
  }

  /**
   * Whether this instance knows the DR state: read from Redis, or from its state file when Redis was
   * unreachable at start. Until then writes are refused (fail-safe start).
   */
  known(): boolean {
    return this.source !== 'unknown';
  }

  stateSource(): StateSource {
    return this.source;
  }

  get leaseMs(): number {
    return this.deps.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /**
   * The lease rule: once the state was last confirmed in Redis longer ago than the lease (or never,
   * e.g. started from the state file), this instance must not acknowledge writes: another instance
   * may have changed the state meanwhile, and waits for this one only while its lease runs.
   */
  leaseExpired(): boolean {
    return this.confirmedAt === null || this.now() - this.confirmedAt > this.leaseMs;
  }

  lease(): { ms: number; confirmedAt: string | null; expired: boolean } {
    return {
      ms: this.leaseMs,
      confirmedAt: this.confirmedAt === null ? null : new Date(this.confirmedAt).toISOString(),
      expired: this.leaseExpired(),
    };
  }

  /** Called once each time the lease runs out (e.g. to raise the write barrier). */
  onLeaseLost(listener: () => void): void {
    this.leaseListeners.push(listener);
  }

  private confirm(at: number): void {
    const wasExpired = this.leaseExpired();
    this.confirmedAt = Math.max(this.confirmedAt ?? 0, at);
    if (wasExpired && this.source !== 'unknown')
      this.deps.logger.info({ leaseMs: this.leaseMs }, 'DR state confirmed in Redis: the lease runs again');
    clearTimeout(this.leaseTimer);
    this.leaseTimer = setTimeout(() => this.checkLease(), Math.max(0, this.confirmedAt + this.leaseMs + 1 - this.now()));
    this.leaseTimer.unref();
  }

  private checkLease(): void {
    if (!this.leaseExpired()) return;
    this.deps.logger.warn(
      { leaseMs: this.leaseMs, confirmedAt: this.lease().confirmedAt },
      'DR state not confirmed within the lease: writes are refused (state_stale) until Redis answers',
    );
    for (const listener of this.leaseListeners) {
      try {
        listener();
      } catch (err) {
        this.deps.logger.error({ err }, 'lease listener failed');
      }
    }
  }

  /** Whether the last exchange with the store succeeded. */
  storeAvailable(): boolean {
    return this.storeUp;
  }

  onApply(listener: StateListener): void {
    this.listeners.push(listener);
  }

  async start(): Promise<void> {
    this.subscription = this.deps.subscribe(() => void this.sync());
    await this.sync();
    if (!this.known()) await this.startFromFile();
    this.timer = setInterval(() => void this.sync(), this.deps.syncIntervalMs);
    this.timer.unref();
  }

  /**
   * Stops following the state. Called after the HTTP server drained (no request of this instance
   * can still be answered), so its heartbeat is dropped: changes need not wait for it.
   */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.leaseTimer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.deps.stateStore.forget?.(this.deps.instanceId).catch(() => undefined),
      new Promise((resolve) => {
        timer = setTimeout(resolve, 500);
      }),
    ]);
    clearTimeout(timer);
    await this.subscription?.close();
  }

  /** Reads the stored state, applies it if newer, restores ours if the store lost it, heartbeats. */
  sync(): Promise<void> {
    this.syncing ??= this.doSync().finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  /** Redis did not answer at start: follow the last state this instance applied, if it kept one. */
  private async startFromFile(): Promise<void> {
    let saved: DrState | null = null;
    try {
      saved = this.deps.file?.read() ?? null;
    } catch (err) {
      this.deps.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'the DR state file cannot be read');
    }
    if (!saved) {
      this.deps.logger.error(
        'DR state unknown: Redis is unreachable and there is no state file; writes are refused until the state is known',
      );
      return;
    }
    this.source = 'file';
    await this.apply(saved);
    this.deps.logger.warn(
      { version: saved.version, file: this.deps.file?.path },
      'Redis unreachable at start: following the DR state from the state file',
    );
  }

  private async doSync(): Promise<void> {
    const readAt = this.now();
    try {
      const stored = await this.deps.stateStore.read();
      if (this.source === 'unknown') {
        // Redis answered: its state, or (when it lost its data) the newest this instance kept.
        this.source = 'store';
        let saved: DrState | null = null;
        try {
          saved = this.deps.file?.read() ?? null;
        } catch {
          saved = null;
        }
        if (saved && saved.version > (stored?.version ?? 0) && saved.version > this.state.version) await this.apply(saved);
      }
      if ((stored === null || stored.version < this.state.version) && this.state.version > 0) {
        if (await this.deps.stateStore.restore(this.state)) {
          this.deps.logger.warn(
            { version: this.state.version },
            'DR state was missing from Redis; restored the newest state this instance holds',
          );
        }
      } else if (stored && stored.version > this.state.version) {
        await this.apply(stored);
      }
      await this.heartbeat();
      // The state is confirmed only once applied and reported: the heartbeat is never older than the
      // confirmation, so an instance that sees it older than the lease knows this one refuses writes.
      this.confirm(readAt);
      this.markStore(true);
    } catch (err) {
      this.markStore(false, err);
    }
  }

  private markStore(up: boolean, err?: unknown): void {
    if (up && !this.storeUp) this.deps.logger.info('DR state store reachable again');
    if (!up && this.storeUp) {
      this.deps.logger.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'DR state store unreachable; serving with the last known state',
      );
    }
    this.storeUp = up;
  }

  /** Facts this instance reports with its heartbeat (e.g. its last write barrier). */
  readonly annotations: Record<string, unknown> = {};

  private async heartbeat(): Promise<void> {
    await this.deps.stateStore.heartbeat({
      ...this.annotations,
      id: this.deps.instanceId,
      appliedVersion: this.state.version,
      lastSeen: new Date(this.now()).toISOString(),
    });
  }

  private async apply(next: DrState): Promise<void> {
    const previous = this.state;
    this.state = next;
    this.deps.metrics.drStateVersion.set(next.version);
    try {
      this.deps.file?.write(next);
    } catch (err) {
      this.deps.logger.error(
        { err: err instanceof Error ? err.message : String(err), file: this.deps.file?.path },
        'the DR state file cannot be written',
      );
    }
    for (const listener of this.listeners) {
      try {
        await listener(next, previous);
      } catch (err) {
        this.deps.logger.error({ err, version: next.version }, 'applying the DR state failed');
      }
    }
    this.deps.logger.info(
      { version: next.version, readOnly: next.readOnly.enabled, database: next.database.active, media: next.media.active },
      'DR state applied',
    );
    await this.heartbeat().catch(() => undefined);
  }

  /**
   * Applies `mutate` to the newest stored state as one compare-and-set. Throws 503 when the store
   * is unreachable (nothing is half-applied) and 409 with the current state when another change
   * won the race.
   */
  async change(mutate: (current: DrState, now: string) => Omit<DrState, 'version' | 'updatedAt'>): Promise<Change> {
    let base: DrState;
    const readAt = this.now();
    try {
      if (!this.known()) await this.sync();
      // Without Redis there is no change anyway; a state never known is not the base of one.
      base = (await this.deps.stateStore.read()) ?? this.state;
      if (base.version < this.state.version) base = this.state;
    } catch (err) {
      this.markStore(false, err);
      throw new DependencyUnavailableError('redis', 'the DR state store (Redis) is unreachable; no change was made', err);
    }
    const now = new Date(this.now()).toISOString();
    const after: DrState = { ...mutate(base, now), version: base.version + 1, updatedAt: now };
    let result;
    try {
      result = await this.deps.stateStore.compareAndSet(base.version, after);
    } catch (err) {
      this.markStore(false, err);
      throw new DependencyUnavailableError('redis', 'the DR state store (Redis) is unreachable; no change was made', err);
    }
    if (!result.ok) {
      if (result.current && result.current.version > this.state.version) await this.apply(result.current);
      throw new ConflictError('another change to the DR state won the race; nothing was changed', {
        current: result.current ?? this.state,
      });
    }
    await this.apply(after);
    // Our compare-and-set confirms the state, once our heartbeat is at least as new as the confirmation.
    try {
      await this.heartbeat();
      this.confirm(readAt);
    } catch {
      // Redis went away right after the change: the lease keeps its last confirmation.
    }
    return { before: base, after };
  }

  async instances(): Promise<InstanceHeartbeat[]> {
    return this.deps.stateStore.instances();
  }

  /** How long a change waits for acks: past it, an instance that has not applied is past its lease too. */
  propagationBoundMs(): number {
    return this.leaseMs + LEASE_SKEW_MS + 500;
  }

  /** Whether a heartbeat is within the lease (with the skew allowance), as this instance's clock sees it. */
  heartbeatLive(beat: InstanceHeartbeat, now = this.now()): boolean {
    return now - Date.parse(beat.lastSeen) <= this.leaseMs + LEASE_SKEW_MS;
  }

  /**
   * Waits (bounded) until every live instance (heartbeat within the lease) reports `version`
   * applied. An instance whose heartbeat is, or becomes, older than the lease is not waited for:
   * by the lease rule it refuses writes until it re-confirms the state, and it applies the newest
   * version before it confirms. With the default bound (propagationBoundMs), an instance that never
   * answers becomes stale before the bound, so `complete` is false only when a live instance keeps
   * heartbeating without applying (or clocks are skewed beyond LEASE_SKEW_MS).
   */
  async waitForInstances(version: number, timeoutMs = this.propagationBoundMs()): Promise<Propagation> {
    const started = this.now();
    const deadline = started + timeoutMs;
    let instances: InstanceHeartbeat[] | null = null;
    for (;;) {
      instances = await this.instances().catch(() => instances);
      const now = this.now();
      const list = instances ?? [];
      const applied = list.filter((i) => i.appliedVersion >= version);
      const pending = list.filter((i) => i.appliedVersion < version);
      const live = pending.filter((i) => this.heartbeatLive(i, now));
      if ((instances !== null && live.length === 0) || now >= deadline) {
        return {
          applied: applied.length,
          total: list.length,
          instances: list,
          complete: instances !== null && live.length === 0,
          notApplied: instances === null ? ['(the state store did not answer: unverified)'] : live.map((i) => i.id),
          stale: pending
            .filter((i) => !this.heartbeatLive(i, now))
            .map((i) => ({ id: i.id, appliedVersion: i.appliedVersion, lastSeen: i.lastSeen })),
          leaseMs: this.leaseMs,
          waitedMs: now - started,
        };
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }
}
