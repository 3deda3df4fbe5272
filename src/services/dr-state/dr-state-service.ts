import { AppError, ConflictError, DependencyUnavailableError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { DrMetrics } from '../../metrics/metrics.ts';
import { INITIAL_STATE, writeRelevantChange, type DatabaseState, type DrState, type InstanceHeartbeat } from './dr-state.ts';
import type { DrStateFile } from './dr-state-file.ts';
import type { DrStateStore } from './dr-state-store.ts';
import { errorMessage } from '../../lib/error-message.ts';

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
  /**
   * How long an instance that never knew any state (no state file, never confirmed) waits, when it
   * finds Redis empty, for instances holding a state to report before it seeds the initial state
   * (a fresh cluster). Default: two sync intervals.
   */
  seedGraceMs?: number;
  now?: () => number;
}

export const DEFAULT_LEASE_MS = 5000;
/** Allowance for clock skew between instances when judging another instance's heartbeat age. */
export const LEASE_SKEW_MS = 1000;
/** How often a change's wait for every live instance reads their heartbeats again. */
const WAIT_POLL_MS = 10;
/** How many of its latest changes' fence raises an instance remembers (far more than writes wait for). */
const FENCE_RAISES_KEPT = 32;
/** How often a database write fence that failed on a node (down at the change) is raised again. */
export const FENCE_RETRY_MS = 2000;

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
  /** The database write fence raised for a write-relevant change (absent: not relevant, or no fence configured). */
  fence?: FenceReport;
}

/** What raising the database write fence to a change's version did (see WriteFence). */
export interface FenceReport {
  /**
   * raised: every node that takes writes has its fence at `epoch` (commits admitted under an older
   * version finished before, or are refused); not_raised: no node could be fenced (e.g. the database
   * is unreachable), so a write stalled under the previous state may still commit where it can;
   * partial: some nodes raised, some failed.
   */
  databaseFence: 'raised' | 'partial' | 'not_raised';
  epoch: number;
  /** Per configured node: raised, skipped (standby, or fenced read-only), or failed with the error. */
  nodes: Record<string, { outcome: 'raised' | 'standby' | 'fenced' | 'failed'; error?: string }>;
  reason?: string;
  waitedMs: number;
}

/** The database write fence as the DR state sees it (implemented over the configured nodes). */
export interface WriteFence {
  /**
   * Raises the fence on every node that takes writes to `version` (never lowers it); waits for
   * commits under way. `nodes`: only these (a retry on the nodes a raise could not reach).
   */
  raise(version: number, by: string, nodes?: string[]): Promise<FenceReport>;
  /** The highest fence epoch any reachable node holds (null: none answered). */
  highest(): Promise<number | null>;
}

/** Why this instance does not know the shared state although Redis answers (see DrStateService.lost). */
export interface StateLoss {
  since: string;
  reason: string;
}

/** A change refused because this instance does not know the current shared state. */
export class StateUnknownError extends AppError {
  constructor(message: string) {
    super(503, 'state_unknown', message);
    this.headers['Retry-After'] = '5';
  }
}

/**
 * Keeps this instance's in-memory copy of the shared DR state current: pub/sub for speed, a
 * periodic re-read as a safety net. Request paths read the copy and never wait on Redis. Changes
 * are compare-and-set on the version: two racing writers cannot both win.
 *
 * When Redis comes back empty (a restart without persistence, FLUSHALL), only an instance that knows
 * its copy is current (its lease still ran when it found Redis empty: every change before that was
 * applied by it or waited for it) puts its copy back at once. An instance whose lease had run out
 * (partitioned, restarted from its file) cannot vouch for its copy: it refuses writes
 * (`state_unknown`) and reports its copy as a candidate. Once every instance that was live when any
 * candidate last confirmed the state has reported, the newest candidate is put back (compare-and-set
 * on the version, so the higher version wins a race); until then, or until an operator resets the
 * state, the cluster stays fail-safe.
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
  /** Set while Redis holds no state and this instance cannot vouch for its copy. */
  private loss: (StateLoss & { at: number }) | null = null;
  /** The instances live (heartbeat within the lease) when this instance last confirmed the state. */
  private peers: string[] = [];
  private fence?: WriteFence;
  /** The database write fence raises of this instance's latest changes, by version (see fenceRaise). */
  private readonly fenceRaises = new Map<number, Promise<FenceReport>>();
  /** A raise that failed on a node, tried again until that node answers (see raiseFence). */
  private fenceRetry: { version: number; timer: NodeJS.Timeout } | null = null;
  private seedDatabase?: () => Promise<DatabaseState | null>;

  constructor(private readonly deps: DrStateServiceDeps) {
    deps.metrics.drStateVersion.set(0);
  }

  current(): DrState {
    return this.state;
  }

  /**
   * The database write fence this instance raised for its change to `version`, which that change
   * awaited before it answered (undefined: not this instance's change, none raised, or one of long
   * ago). The write gate asks it about the commits a barrier gave up on.
   */
  fenceRaise(version: number): Promise<FenceReport> | undefined {
    return this.fenceRaises.get(version);
  }

  /** Sets the database write fence every write-relevant change raises before it returns. */
  useWriteFence(fence: WriteFence): void {
    this.fence = fence;
  }

  /**
   * What a fresh instance's seed records as the database part: the newest writable node as the
   * target and every node's identity (null: nothing known, the initial state's).
   */
  useSeedDatabase(fn: () => Promise<DatabaseState | null>): void {
    this.seedDatabase = fn;
  }

  /**
   * Whether this instance knows the DR state: read from Redis, or from its state file when Redis was
   * unreachable at start. Until then writes are refused (fail-safe start).
   */
  known(): boolean {
    return this.source !== 'unknown' && this.loss === null;
  }

  /** Why the state is unknown although Redis answers (it lost the state), or null. */
  lost(): StateLoss | null {
    return this.loss ? { since: this.loss.since, reason: this.loss.reason } : null;
  }

  private get seedGraceMs(): number {
    return this.deps.seedGraceMs ?? 2 * this.deps.syncIntervalMs;
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
    if (!this.leaseExpired()) {
      // A timer may fire a millisecond before Date.now() says it is due: check again then, else the
      // lease-lost listeners were never called (seen in a fresh-clone run).
      if (this.confirmedAt !== null) {
        this.leaseTimer = setTimeout(() => this.checkLease(), Math.max(1, this.confirmedAt + this.leaseMs + 1 - this.now()));
        this.leaseTimer.unref();
      }
      return;
    }
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
    // A fresh instance found Redis empty: give instances holding a state the grace to report first.
    if (this.loss && this.state.version === 0 && this.confirmedAt === null) {
      await new Promise((resolve) => setTimeout(resolve, this.seedGraceMs + 50));
      await this.sync();
    }
    if (this.source === 'unknown') await this.startFromFile();
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
    clearTimeout(this.fenceRetry?.timer);
    this.fenceRetry = null;
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
      this.deps.logger.error({ err: errorMessage(err) }, 'the DR state file cannot be read');
    }
    if (!saved) {
      this.deps.logger.error(
        'DR state unknown: Redis is unreachable and there is no state file; writes are refused until the state is known',
      );
      return;
    }
    this.source = 'file';
    this.peers = this.deps.file?.readPeers?.() ?? [];
    await this.apply(saved);
    this.deps.logger.warn(
      { version: saved.version, file: this.deps.file?.path },
      'Redis unreachable at start: following the DR state from the state file',
    );
  }

  private async doSync(): Promise<void> {
    const readAt = this.now();
    // Known current: confirmed within the lease, so every change recorded before this read was
    // applied here or is still waiting for this instance.
    const current = this.confirmedAt !== null && this.loss === null && !this.leaseExpired();
    try {
      let stored = await this.deps.stateStore.read();
      if (this.source === 'unknown') {
        // Redis answered: its state, or (when it lost its data) what this instance kept.
        this.source = 'store';
        let saved: DrState | null = null;
        try {
          saved = this.deps.file?.read() ?? null;
        } catch {
          saved = null;
        }
        if (saved) this.peers = this.deps.file?.readPeers?.() ?? [];
        if (saved && saved.version > (stored?.version ?? -1) && saved.version > this.state.version) await this.apply(saved);
      }
      if (stored === null || (current && stored.version < this.state.version)) {
        if (current) {
          if (await this.deps.stateStore.restore(this.state)) {
            this.deps.logger.warn(
              { version: this.state.version },
              'DR state was missing from Redis (or older there); restored this instance’s copy, current within its lease',
            );
          }
          stored = await this.deps.stateStore.read();
          if (stored && stored.version > this.state.version) await this.apply(stored);
        } else if (!(await this.seedAsCandidate(stored === null))) {
          this.markStore(true);
          return;
        }
      } else if (this.conflicts(stored)) {
        // A lower version, or a blind seed, over the copy this instance holds: never followed.
        await this.reassert(stored);
      } else if (stored.version !== this.state.version || stored.updatedAt !== this.state.updatedAt) {
        // Newer; or older or another state of the same version (an operator reset while this
        // instance was away) that Redis holds and this instance cannot vouch against: Redis wins.
        if (stored.version < this.state.version)
          this.deps.logger.warn(
            { stored: stored.version, held: this.state.version },
            'Redis holds an older DR state than this instance’s copy, which it cannot vouch for (lease expired): following Redis',
          );
        await this.apply(stored);
      }
      if (this.loss) {
        this.deps.logger.warn({ version: this.state.version }, 'the shared DR state is known again');
        this.loss = null;
      }
      await this.heartbeat();
      this.notePeers(await this.deps.stateStore.instances());
      // The state is confirmed only once applied and reported: the heartbeat is never older than the
      // confirmation, so an instance that sees it older than the lease knows this one refuses writes.
      this.confirm(readAt);
      this.markStore(true);
    } catch (err) {
      this.markStore(false, err);
    }
  }

  /**
   * Whether `stored` must not replace this instance's copy: versions only move up (every change is a
   * compare-and-set on the version, and an operator's reset goes above every reported copy and the
   * database write fence), so a lower version in Redis is a state lost and re-seeded or restored from
   * an outdated copy; and a blindly seeded state (see DrState.seeded) never wins over a copy that
   * knew the real state.
   */
  private conflicts(stored: DrState): boolean {
    if (this.source === 'unknown' || this.state.version === 0 || this.state.seeded) return false;
    if (stored.version < this.state.version) return true;
    return stored.seeded === true && stored.updatedAt !== this.state.updatedAt;
  }

  /** Puts this instance's copy back over a conflicting stored state (compare-and-set), logs and applies the outcome. */
  private async reassert(stored: DrState): Promise<void> {
    const next: DrState =
      stored.version < this.state.version
        ? this.state
        : { ...this.state, version: stored.version + 1, updatedAt: new Date(this.now()).toISOString() };
    const won =
      next === this.state ? await this.deps.stateStore.restore(next) : (await this.deps.stateStore.compareAndSet(stored.version, next)).ok;
    this.deps.logger.error(
      {
        stored: {
          version: stored.version,
          seeded: stored.seeded === true,
          readOnly: stored.readOnly.enabled,
          database: stored.database.active,
        },
        held: { version: this.state.version, readOnly: this.state.readOnly.enabled, database: this.state.database.active },
        putBack: won ? next.version : null,
      },
      won
        ? 'DR state conflict: Redis held a lower or blindly seeded state; this instance put its own copy back (versions never go down)'
        : 'DR state conflict: Redis held a lower or blindly seeded state; putting this instance’s copy back lost a race',
    );
    const now = await this.deps.stateStore.read();
    if (now && (now.version > this.state.version || (now.version === next.version && next !== this.state))) await this.apply(now);
  }

  private notePeers(beats: InstanceHeartbeat[]): void {
    const peers = beats
      .filter((b) => b.id === this.deps.instanceId || this.heartbeatLive(b))
      .map((b) => b.id)
      .sort();
    if (!peers.includes(this.deps.instanceId)) peers.push(this.deps.instanceId);
    if (peers.join() === this.peers.join()) return;
    this.peers = peers;
    try {
      this.deps.file?.write(this.state, this.peers);
    } catch {
      // Logged by apply when the file cannot be written at all.
    }
  }

  /**
   * Redis holds no state and this instance cannot vouch for its copy (lease expired). Refuses
   * writes (state_unknown) and reports its copy as a candidate; puts it back only when it is the
   * newest among the candidates and every instance that any candidate saw live at its last
   * confirmation has reported (so none that may hold a newer state is missing), or, for an
   * instance that never knew any state, after the grace with no other candidate (a fresh
   * cluster). True once Redis holds a state again.
   */
  private async seedAsCandidate(empty: boolean): Promise<boolean> {
    const now = this.now();
    if (!this.loss) {
      this.loss = {
        at: now,
        since: new Date(now).toISOString(),
        reason: empty
          ? 'Redis holds no DR state (it restarted empty) and this instance’s copy may be outdated (its lease had run out)'
          : 'Redis holds an older DR state than this instance’s copy, which may itself be outdated (its lease had run out)',
      };
      if (this.state.version > 0 || this.confirmedAt !== null)
        this.deps.logger.error(
          { version: this.state.version, peers: this.peers },
          'DR state lost from Redis and this instance cannot vouch for its copy: writes refused (state_unknown) until the newest copy is restored or an operator resets the state',
        );
    }
    await this.heartbeat();
    const fresh = this.state.version === 0 && this.confirmedAt === null && this.peers.length === 0;
    if (fresh && now - this.loss.at < this.seedGraceMs) return false;
    const beats = (await this.deps.stateStore.instances()).filter((b) => b.id !== this.deps.instanceId && this.heartbeatLive(b, now));
    // A live instance that is not lost vouches for its copy: it puts it back itself.
    if (beats.some((b) => !b.stateLost)) return false;
    const present = new Set([this.deps.instanceId, ...beats.map((b) => b.id)]);
    const required = new Set([...this.peers, ...beats.flatMap((b) => b.stateLost?.peers ?? [])]);
    const missing = [...required].filter((id) => !present.has(id));
    const newest = Math.max(0, ...beats.map((b) => b.appliedVersion));
    if (missing.length > 0 || newest > this.state.version) {
      this.loss.reason = `${this.loss.reason.split(';')[0]}; ${
        missing.length > 0
          ? `waiting for ${missing.join(', ')} (live when a copy was last confirmed: may hold a newer state), or an operator reset`
          : `instance(s) with version ${newest} put theirs back`
      }`;
      return false;
    }
    // A fresh instance seeds a default it knows little about: marked, so any copy that knew the real
    // state wins; its database target is the newest writable node; its version is not below the
    // database write fence (else every write would be refused as admitted under an older state).
    if (fresh) {
      const database = await this.seedDatabase?.().catch(() => null);
      const floor = (await this.fence?.highest().catch(() => null)) ?? 0;
      await this.apply({
        ...this.state,
        ...(database ? { database } : {}),
        version: Math.max(this.state.version, floor),
        updatedAt: new Date(now).toISOString(),
        seeded: true,
      });
    }
    if (await this.deps.stateStore.restore(this.state))
      this.deps.logger.warn(
        { version: this.state.version, candidates: [...present] },
        'DR state was missing from Redis; put back the newest copy among the instances that could have held one',
      );
    const stored = await this.deps.stateStore.read();
    if (!stored) return false;
    if (JSON.stringify(stored) !== JSON.stringify(this.state)) await this.apply(stored);
    return true;
  }

  private markStore(up: boolean, err?: unknown): void {
    if (up && !this.storeUp) this.deps.logger.info('DR state store reachable again');
    if (!up && this.storeUp) {
      this.deps.logger.warn({ err: errorMessage(err) }, 'DR state store unreachable; serving with the last known state');
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
      ...(this.loss ? { stateLost: { since: this.loss.since, peers: this.peers } } : {}),
    });
  }

  private async apply(next: DrState): Promise<void> {
    const previous = this.state;
    this.state = next;
    this.deps.metrics.drStateVersion.set(next.version);
    try {
      this.deps.file?.write(next, this.peers.length > 0 ? this.peers : undefined);
    } catch (err) {
      this.deps.logger.error({ err: errorMessage(err), file: this.deps.file?.path }, 'the DR state file cannot be written');
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
   * is unreachable (nothing is half-applied), 503 `state_unknown` while this instance does not know
   * the current state (unless `seed`: an operator's reset, which replaces whatever is stored with a
   * version above every copy an instance reports), and 409 with the current state when another
   * change won the race.
   */
  async change(
    mutate: (current: DrState, now: string) => Omit<DrState, 'version' | 'updatedAt'>,
    opts: {
      seed?: boolean;
      /** Compare-and-set on the version the caller read (null: nothing stored): 409 when the stored version differs. */
      expectVersion?: number | null;
    } = {},
  ): Promise<Change> {
    let base: DrState;
    let expected: number;
    let version: number;
    const readAt = this.now();
    try {
      if (!this.known()) await this.sync();
      const stored = await this.deps.stateStore.read();
      if (opts.expectVersion !== undefined && (stored?.version ?? null) !== opts.expectVersion)
        throw new ConflictError(
          `the DR state changed since it was read (version ${opts.expectVersion ?? 'none'}, now ${stored?.version ?? 'none'}); nothing was changed`,
          { current: stored ?? this.state },
        );
      if (opts.seed) {
        base = stored ?? this.state;
        expected = stored?.version ?? 0;
        const copies = (await this.deps.stateStore.instances()).map((i) => i.appliedVersion);
        // Above the database write fence too, else every write would be refused as stale.
        const fenced = (await this.fence?.highest().catch(() => null)) ?? 0;
        version = Math.max(expected, this.state.version, fenced, ...copies) + 1;
      } else {
        // A fresh instance (never knew any state) on an empty store may make the first change, as
        // long as no instance reports a copy: it is the seeding of a fresh cluster.
        const fresh =
          this.loss !== null &&
          stored === null &&
          this.state.version === 0 &&
          this.confirmedAt === null &&
          this.peers.length === 0 &&
          (await this.deps.stateStore.instances()).every((i) => i.appliedVersion === 0);
        if (!this.known() && !fresh)
          throw new StateUnknownError(
            `the DR state is unknown on this instance (${this.loss?.reason ?? 'Redis unreachable since start and no state file'}); no change was made. An operator can reset it (POST /admin/dr/state/reset)`,
          );
        // Without Redis there is no change anyway.
        base = stored ?? this.state;
        if (base.version < this.state.version) base = this.state;
        expected = base.version;
        version = base.version + 1;
      }
    } catch (err) {
      if (err instanceof AppError) throw err;
      this.markStore(false, err);
      throw new DependencyUnavailableError('redis', 'the DR state store (Redis) is unreachable; no change was made', err);
    }
    const now = new Date(this.now()).toISOString();
    const after: DrState = { ...mutate(base, now), version, updatedAt: now };
    // A change is made knowing the state it replaces: only the blind seed itself is marked.
    delete after.seeded;
    let result;
    try {
      result = await this.deps.stateStore.compareAndSet(expected, after);
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
    // The database write fence, before the change answers: a write admitted under an older version
    // (on any instance, even one paused past its lease) committed before this, or is refused. Raised
    // while this instance applies the change (its own barrier) and heartbeats: neither depends on
    // the other, and the answer waits for both.
    const raising = this.fence && (opts.seed || writeRelevantChange(after, base)) ? this.raiseFence(this.fence, after.version) : undefined;
    if (raising) {
      this.fenceRaises.set(after.version, raising);
      for (const old of this.fenceRaises.keys()) if (this.fenceRaises.size > FENCE_RAISES_KEPT) this.fenceRaises.delete(old);
    }
    await this.apply(after);
    if (this.loss) {
      this.deps.logger.warn({ version: after.version }, 'the DR state was reset by an operator: known again');
      this.loss = null;
    }
    // Our compare-and-set confirms the state, once our heartbeat is at least as new as the confirmation.
    try {
      await this.heartbeat();
      this.confirm(readAt);
    } catch {
      // Redis went away right after the change: the lease keeps its last confirmation.
    }
    const fence = await raising;
    return { before: base, after, ...(fence ? { fence } : {}) };
  }

  private async raiseFence(fence: WriteFence, version: number): Promise<FenceReport> {
    const report = await fence.raise(version, `${this.deps.instanceId}`).catch((err: unknown): FenceReport => ({
      databaseFence: 'not_raised',
      epoch: version,
      nodes: {},
      reason: errorMessage(err),
      waitedMs: 0,
    }));
    if (report.databaseFence !== 'raised')
      this.deps.logger.error(
        { version, fence: report },
        'the database write fence could not be raised on every node that takes writes: a write stalled under the previous DR state may still commit there',
      );
    const failed = failedOn(report);
    if (failed.length > 0) this.retryFence(fence, version, failed);
    else if (this.fenceRetry && this.fenceRetry.version <= version) {
      // Raised everywhere at a later epoch: the fence never goes down (GREATEST), the older retry is moot.
      clearTimeout(this.fenceRetry.timer);
      this.fenceRetry = null;
    }
    return report;
  }

  /**
   * Raises the fence for `version` again, every FENCE_RETRY_MS, until no node fails (a node down at
   * the change answers again): a write stalled under the previous state on an instance that never
   * applied the change would otherwise commit on a returning primary. The change has answered
   * (saying not_raised or partial); this only closes the window once the node is back.
   */
  private retryFence(fence: WriteFence, version: number, nodes: string[]): void {
    if (this.fenceRetry && this.fenceRetry.version >= version) return;
    clearTimeout(this.fenceRetry?.timer);
    // Only the nodes it could not reach: the others hold the epoch already (it never goes down), and
    // a raise there would make their commits under way wait, and cancel stuck ones, for nothing.
    let pending = nodes;
    const attempt = async () => {
      const report = await fence.raise(version, `${this.deps.instanceId} (retry)`, pending).catch(() => null);
      if (this.fenceRetry?.version !== version) return; // stopped, or superseded by a newer change
      if (report) pending = failedOn(report);
      if (report && pending.length === 0) {
        this.fenceRetry = null;
        this.deps.logger.info({ version, fence: report }, 'the database write fence is up now on the nodes a change could not reach');
        return;
      }
      this.fenceRetry = { version, timer: setTimeout(() => void attempt(), FENCE_RETRY_MS).unref() };
    };
    this.fenceRetry = { version, timer: setTimeout(() => void attempt(), FENCE_RETRY_MS).unref() };
  }

  /** The version Redis holds now (null: nothing stored); throws when Redis does not answer. */
  async storedVersion(): Promise<number | null> {
    return (await this.deps.stateStore.read())?.version ?? null;
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
      await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
    }
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }
}

/**
 * `change` for recording what has already happened (a node promoted): a compare-and-set lost to a
 * concurrent change (another instance putting a state back, a read-only toggle) is retried on the
 * newer state, a few times, instead of answering 409 "nothing was changed".
 */
export async function changeRetrying(
  dr: Pick<DrStateService, 'change'>,
  mutate: (current: DrState, now: string) => Omit<DrState, 'version' | 'updatedAt'>,
  attempts = 5,
): Promise<Change> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await dr.change(mutate);
    } catch (err) {
      if (!(err instanceof ConflictError) || attempt >= attempts) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
}

/** The nodes a fence raise could not reach. */
function failedOn(report: FenceReport): string[] {
  return Object.entries(report.nodes)
    .filter(([, n]) => n.outcome === 'failed')
    .map(([node]) => node);
}
