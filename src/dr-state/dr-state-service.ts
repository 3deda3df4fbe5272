import { ConflictError, DependencyUnavailableError } from '../http/app-error.ts';
import type { Logger } from '../logger.ts';
import type { DrMetrics } from '../metrics/metrics.ts';
import { INITIAL_STATE, type DrState, type InstanceHeartbeat } from './dr-state.ts';
import type { DrStateFile } from './dr-state-file.ts';
import type { DrStateStore } from './dr-state-store.ts';

export type StateListener = (state: DrState, previous: DrState) => void | Promise<void>;

/** The pub/sub seam: calls back on every published change, and after every reconnect. */
export type Subscribe = (onChange: () => void) => { close(): Promise<void> };

export interface DrStateServiceDeps {
  store: DrStateStore;
  subscribe: Subscribe;
  instanceId: string;
  /** Safety-net re-read (pub/sub drops messages across reconnects) and heartbeat period. */
  syncIntervalMs: number;
  metrics: DrMetrics;
  logger: Logger;
  /** The local copy of the last applied state (DR_STATE_FILE); none in some service tests. */
  file?: DrStateFile;
  now?: () => number;
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

  async stop(): Promise<void> {
    clearInterval(this.timer);
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
      this.deps.logger.error('DR state unknown: Redis is unreachable and there is no state file; writes are refused until the state is known');
      return;
    }
    this.source = 'file';
    await this.apply(saved);
    this.deps.logger.warn({ version: saved.version, file: this.deps.file?.path }, 'Redis unreachable at start: following the DR state from the state file');
  }

  private async doSync(): Promise<void> {
    try {
      const stored = await this.deps.store.read();
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
        if (await this.deps.store.restore(this.state)) {
          this.deps.logger.warn({ version: this.state.version }, 'DR state was missing from Redis; restored the newest state this instance holds');
        }
      } else if (stored && stored.version > this.state.version) {
        await this.apply(stored);
      }
      await this.heartbeat();
      this.markStore(true);
    } catch (err) {
      this.markStore(false, err);
    }
  }

  private markStore(up: boolean, err?: unknown): void {
    if (up && !this.storeUp) this.deps.logger.info('DR state store reachable again');
    if (!up && this.storeUp) {
      this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'DR state store unreachable; serving with the last known state');
    }
    this.storeUp = up;
  }

  /** Facts this instance reports with its heartbeat (e.g. its last write barrier). */
  readonly annotations: Record<string, unknown> = {};

  private async heartbeat(): Promise<void> {
    await this.deps.store.heartbeat({ ...this.annotations, id: this.deps.instanceId, appliedVersion: this.state.version, lastSeen: new Date(this.now()).toISOString() });
  }

  private async apply(next: DrState): Promise<void> {
    const previous = this.state;
    this.state = next;
    this.deps.metrics.drStateVersion.set(next.version);
    try {
      this.deps.file?.write(next);
    } catch (err) {
      this.deps.logger.error({ err: err instanceof Error ? err.message : String(err), file: this.deps.file?.path }, 'the DR state file cannot be written');
    }
    for (const listener of this.listeners) {
      try {
        await listener(next, previous);
      } catch (err) {
        this.deps.logger.error({ err, version: next.version }, 'applying the DR state failed');
      }
    }
    this.deps.logger.info({ version: next.version, readOnly: next.readOnly.enabled, database: next.database.active, media: next.media.active }, 'DR state applied');
    await this.heartbeat().catch(() => undefined);
  }

  /**
   * Applies `mutate` to the newest stored state as one compare-and-set. Throws 503 when the store
   * is unreachable (nothing is half-applied) and 409 with the current state when another change
   * won the race.
   */
  async change(mutate: (current: DrState, now: string) => Omit<DrState, 'version' | 'updatedAt'>): Promise<Change> {
    let base: DrState;
    try {
      if (!this.known()) await this.sync();
      // Without Redis there is no change anyway; a state never known is not the base of one.
      base = (await this.deps.store.read()) ?? this.state;
      if (base.version < this.state.version) base = this.state;
    } catch (err) {
      this.markStore(false, err);
      throw new DependencyUnavailableError('redis', 'the DR state store (Redis) is unreachable; no change was made', err);
    }
    const now = new Date(this.now()).toISOString();
    const after: DrState = { ...mutate(base, now), version: base.version + 1, updatedAt: now };
    let result;
    try {
      result = await this.deps.store.compareAndSet(base.version, after);
    } catch (err) {
      this.markStore(false, err);
      throw new DependencyUnavailableError('redis', 'the DR state store (Redis) is unreachable; no change was made', err);
    }
    if (!result.ok) {
      if (result.current && result.current.version > this.state.version) await this.apply(result.current);
      throw new ConflictError('another change to the DR state won the race; nothing was changed', { current: result.current ?? this.state });
    }
    await this.apply(after);
    return { before: base, after };
  }

  async instances(): Promise<InstanceHeartbeat[]> {
    return this.deps.store.instances();
  }

  /** Waits (bounded) until every live instance reports `version` applied. */
  async waitForInstances(version: number, timeoutMs: number): Promise<{ applied: number; total: number; instances: InstanceHeartbeat[] }> {
    const deadline = this.now() + timeoutMs;
    for (;;) {
      const instances = await this.instances().catch(() => [] as InstanceHeartbeat[]);
      const applied = instances.filter((i) => i.appliedVersion >= version).length;
      if (applied === instances.length || this.now() >= deadline) return { applied, total: instances.length, instances };
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }
}
