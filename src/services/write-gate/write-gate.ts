import { AsyncLocalStorage } from 'node:async_hooks';
import { AppError } from '../../http/app-error.ts';

/** Why writes are closed right now; null while they are open. */
export interface WriteRefusal {
  code: 'read_only' | 'state_unknown' | 'state_stale' | 'state_mismatch' | 'not_writable';
  message: string;
}

/** One client write, from admission to its answer. */
export interface WriteTicket {
  readonly id: number;
  /** The gate epoch the write was admitted under; a barrier moves the epoch on. */
  readonly epoch: number;
  /**
   * The DR state version the write was admitted under: its commit statement checks it against the
   * database write fence (see media-repository checkFence), which holds even where this process's
   * own barrier could not run in time (a paused process).
   */
  readonly stateVersion: number;
  committing: boolean;
  /**
   * The barriers that gave up waiting for this write's commit: the DR state version of each (null:
   * the lease ran out). Empty while none did. Its answer then follows how the commit ended (see
   * WriteGate.commit): never a refusal for a commit that was applied.
   */
  abandonedBy: (number | null)[];
}

export class WriteRefusedError extends AppError {
  constructor(refusal: WriteRefusal, retryAfterSeconds = 5) {
    super(503, refusal.code, refusal.message);
    this.headers['Retry-After'] = String(retryAfterSeconds);
  }
}

/** A write admitted before a barrier (read-only on, database switch) reached its commit after it. */
export class WriteFencedError extends AppError {
  constructor(message: string) {
    super(503, 'write_fenced', message);
    this.headers['Retry-After'] = '5';
  }
}

/**
 * The answer to a write whose commit may have been applied, or was, without it being acknowledged:
 * a barrier gave up waiting for the commit and it could not be shown to have finished before the
 * change answered (e.g. the database write fence was not raised on every node). Not a refusal: the
 * write may be saved, on the node that took it (read the key). `settled`: whether the commit (and
 * its cache update) ended; when not, the caller invalidates the key's cache entry.
 */
export class WriteOutcomeUnknownError extends AppError {
  constructor(
    message: string,
    readonly settled: boolean,
  ) {
    super(503, 'outcome_unknown', message);
    this.headers['Retry-After'] = '5';
  }
}

/** Options of the gate; see WriteGate.commit for what they decide. */
export interface WriteGateOptions {
  /**
   * Whether the database write fence of the change to `version` was raised by this instance on
   * every node that takes writes, before that change answered (false: not raised everywhere, or
   * not this instance's change). May resolve only once the raise ended.
   */
  fenceRaised?: (version: number) => Promise<boolean> | boolean;
  /** How long a write whose commit a barrier gave up on waits for it to end before answering (ms). */
  settleMs?: number;
}

/** How long a write waits for its commit after a barrier gave up on it, by default. */
export const ABANDONED_SETTLE_MS = 10_000;

export interface BarrierReport {
  /** Client writes running when the barrier was raised. */
  inFlight: number;
  /** Of those, the ones already committing, which the barrier waited for. */
  waitedFor: number;
  /**
   * Whether every commit under way finished within the bound. When not, those writes are answered
   * by how their commit ends (never acknowledged unless it finished before the change answered):
   * see WriteGate.commit.
   */
  drained: boolean;
  /** Writes not yet at their commit: they will fail there, never be acknowledged. */
  failing: number;
  waitedMs: number;
}

/** A commit under way, as the barrier sees it. */
interface Commit {
  /** Resolves (never rejects) when the commit ended. */
  ended: Promise<void>;
  settled: boolean;
  /** Starts the bounded wait of a write whose commit a barrier gave up on (idempotent). */
  abandon(): void;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * The write barrier. Every client write registers here while it runs (`admit`), and commits its
 * metadata through `commit`, which checks that nothing closed writes since the write was admitted.
 * `barrier()` (called when read-only mode goes on or the database target changes) moves the epoch
 * on, so no write admitted earlier commits afterwards, and waits, bounded, for the commits already
 * under way. Once it returns, this instance acknowledges no write admitted under the old state
 * whose commit did not finish before the change answered (see `commit` for the commits it gave up on).
 */
export class WriteGate {
  private epoch = 0;
  private nextId = 0;
  private readonly running = new Set<WriteTicket>();
  private readonly commits = new Map<WriteTicket, Commit>();
  private readonly context = new AsyncLocalStorage<WriteTicket>();

  constructor(
    private readonly refusal: () => WriteRefusal | null,
    /** The DR state version writes are admitted under (0 when not given: unit tests). */
    private readonly stateVersion: () => number = () => 0,
    private readonly options: WriteGateOptions = {},
  ) {}

  /** Why writes are closed now, or null. */
  closed(): WriteRefusal | null {
    return this.refusal();
  }

  /** Registers a client write; throws 503 with the reason when writes are closed. */
  admit(): WriteTicket {
    const refusal = this.refusal();
    if (refusal) throw new WriteRefusedError(refusal);
    const ticket: WriteTicket = {
      id: (this.nextId += 1),
      epoch: this.epoch,
      stateVersion: this.stateVersion(),
      committing: false,
      abandonedBy: [],
    };
    this.running.add(ticket);
    return ticket;
  }

  /** Runs the rest of the request in the write's context, so `commit` and client routing find it. */
  within<T>(ticket: WriteTicket, fn: () => T): T {
    return this.context.run(ticket, fn);
  }

  release(ticket: WriteTicket): void {
    this.running.delete(ticket);
  }

  /** The write this async context belongs to, if any. */
  current(): WriteTicket | undefined {
    return this.context.getStore();
  }

  inFlight(): number {
    return this.running.size;
  }

  /**
   * Commits a write's metadata: refuses when a barrier passed since admission or writes are closed
   * now; otherwise runs `fn` as a commit the next barrier waits for, with the DR state version the
   * write was admitted under, which `fn` must pass to the database write fence. Work outside a
   * client write (background jobs) runs unchecked (`fn` gets undefined).
   *
   * A commit a barrier gave up on (still running at its bound) is answered by how it ends, so that
   * a refusal never hides an applied commit and an acknowledgement never covers one that finished
   * after the change answered (issue 10, F2):
   * - it failed and nothing of it was applied (a refusal by the database fence, an ERROR the server
   *   reported, a commit past its deadline): refused, `write_fenced` (or its own refusal);
   * - it was applied, and finished before every change whose barrier gave up on it answered: the
   *   database write fence of each such change was raised by this instance on every node that takes
   *   writes (the raise waits for, or cancels, the commits holding the fence row, and refuses those
   *   after it, so an applied commit finished before the raise, which the change awaits before it
   *   answers); for a barrier of the lease running out, the state is confirmed again, unchanged
   *   since the write was admitted: acknowledged (the result);
   * - otherwise (applied with no such proof, the outcome unknown, or not ended within `settleMs`
   *   after the barrier gave up): 503 `outcome_unknown`, never acknowledged, never a refusal.
   */
  async commit<T>(fn: (fenceEpoch: number | undefined) => Promise<T>): Promise<T> {
    const ticket = this.context.getStore();
    if (!ticket) return fn(undefined);
    if (ticket.epoch !== this.epoch)
      throw new WriteFencedError(
        'the DR state changed while this write ran (read-only mode, a database or media switch); it was not saved',
      );
    const refusal = this.refusal();
    if (refusal) throw new WriteFencedError(`writes closed while this write ran: ${refusal.message}`);
    ticket.committing = true;
    let timer: NodeJS.Timeout | undefined;
    let expire!: () => void;
    const expired = new Promise<'expired'>((resolve) => {
      expire = () => {
        timer ??= setTimeout(() => resolve('expired'), this.options.settleMs ?? ABANDONED_SETTLE_MS);
      };
    });
    const outcome: Promise<Outcome<T>> = fn(ticket.stateVersion).then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    const entry: Commit = { ended: Promise.resolve(), settled: false, abandon: () => expire() };
    entry.ended = outcome.then(() => {
      entry.settled = true;
    });
    this.commits.set(ticket, entry);
    try {
      const ended = await Promise.race([outcome, expired]);
      if (ended === 'expired')
        throw new WriteOutcomeUnknownError(
          'writes were closed (read-only mode, a database or media switch, the DR state lease) while this write committed, and its commit did not end in time: it may still be applied; read the key to see',
          false,
        );
      if (ticket.abandonedBy.length === 0) {
        if (ended.ok) return ended.value;
        throw ended.error;
      }
      if (!ended.ok) {
        if (nothingApplied(ended.error)) {
          if (ended.error instanceof AppError || (ended.error as { nothingChanged?: unknown }).nothingChanged === true) throw ended.error;
          throw new WriteFencedError(
            'writes were closed (read-only mode, a database or media switch) while this write committed, and its commit failed: it was not saved',
          );
        }
        throw new WriteOutcomeUnknownError(
          'writes were closed (read-only mode, a database or media switch, the DR state lease) while this write committed, and its commit ended with an error that does not say whether it was applied: read the key to see',
          false,
        );
      }
      if (await Promise.race([this.finishedBeforeAnswer(ticket), expired.then(() => false)])) return ended.value;
      throw new WriteOutcomeUnknownError(
        'writes were closed (read-only mode, a database or media switch, the DR state lease) while this write committed; it was saved, but possibly after the change answered (the database write fence was not raised on every node), so it is not acknowledged: it may be lost if the database target changes; read the key to see',
        true,
      );
    } finally {
      clearTimeout(timer);
      this.commits.delete(ticket);
      ticket.committing = false;
    }
  }

  /** Whether an applied commit a barrier gave up on provably finished before every such change answered. */
  private async finishedBeforeAnswer(ticket: WriteTicket): Promise<boolean> {
    for (const version of new Set(ticket.abandonedBy)) {
      if (version === null) {
        // The lease ran out: no change may have been made since the write was admitted.
        if (this.stateVersion() !== ticket.stateVersion || this.refusal() !== null) return false;
        continue;
      }
      // The database fence holds back only writes admitted under an older version.
      if (!(ticket.stateVersion < version)) return false;
      const raised = await Promise.resolve(this.options.fenceRaised?.(version) ?? false).catch(() => false);
      if (!raised) return false;
    }
    return true;
  }

  /**
   * Closes every write admitted so far (see the class comment); waits up to `timeoutMs`. `version`:
   * the DR state version of the change it is raised for (none: the lease ran out).
   */
  async barrier(timeoutMs: number, version?: number): Promise<BarrierReport> {
    const started = performance.now();
    this.epoch += 1;
    const inFlight = this.running.size;
    const pending = [...this.commits.entries()];
    // Writes not yet at their commit (a write whose client went away may still be committing:
    // counted as waited for, never as failing).
    const failing = [...this.running].filter((t) => !this.commits.has(t)).length;
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      Promise.all(pending.map(([, c]) => c.ended)).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!drained)
      for (const [ticket, commit] of pending) {
        if (commit.settled) continue;
        ticket.abandonedBy.push(version ?? null);
        commit.abandon();
      }
    return {
      inFlight,
      waitedFor: pending.length,
      drained,
      failing,
      waitedMs: Math.round(performance.now() - started),
    };
  }
}

/**
 * Whether a failed commit applied nothing: a refusal (AppError), an error marked so (a commit past
 * its deadline), or an ERROR the server reported for the statement (a single-statement transaction:
 * rolled back; a cancel while the commit waits for a synchronous standby is a WARNING and a success,
 * a backend ended after its commit a FATAL, neither of them counts here).
 */
function nothingApplied(err: unknown): boolean {
  if (err instanceof AppError) return true;
  const e = err as { nothingChanged?: unknown; severity?: unknown; code?: unknown };
  if (e?.nothingChanged === true) return true;
  return e?.severity === 'ERROR' && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code);
}
