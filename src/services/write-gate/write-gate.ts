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
  /** Set when a barrier gave up waiting for this write's commit: it must not be acknowledged. */
  abandoned: boolean;
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

export interface BarrierReport {
  /** Client writes running when the barrier was raised. */
  inFlight: number;
  /** Of those, the ones already committing, which the barrier waited for. */
  waitedFor: number;
  /** Whether every commit under way finished within the bound (else those writes are failed). */
  drained: boolean;
  /** Writes not yet at their commit: they will fail there, never be acknowledged. */
  failing: number;
  waitedMs: number;
}

/**
 * The write barrier. Every client write registers here while it runs (`admit`), and commits its
 * metadata through `commit`, which checks that nothing closed writes since the write was admitted.
 * `barrier()` (called when read-only mode goes on or the database target changes) moves the epoch
 * on, so no write admitted earlier commits afterwards, and waits, bounded, for the commits already
 * under way. Once it returns, this instance acknowledges no write admitted under the old state.
 */
export class WriteGate {
  private epoch = 0;
  private nextId = 0;
  private readonly running = new Set<WriteTicket>();
  private readonly commits = new Map<WriteTicket, Promise<unknown>>();
  private readonly context = new AsyncLocalStorage<WriteTicket>();

  constructor(
    private readonly refusal: () => WriteRefusal | null,
    /** The DR state version writes are admitted under (0 when not given: unit tests). */
    private readonly stateVersion: () => number = () => 0,
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
      abandoned: false,
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
    const done = fn(ticket.stateVersion);
    this.commits.set(ticket, done);
    try {
      const result = await done;
      if (ticket.abandoned) throw new WriteFencedError('the DR state changed while this write committed; it is not acknowledged');
      return result;
    } finally {
      this.commits.delete(ticket);
      ticket.committing = false;
    }
  }

  /** Closes every write admitted so far (see the class comment); waits up to `timeoutMs`. */
  async barrier(timeoutMs: number): Promise<BarrierReport> {
    const started = performance.now();
    this.epoch += 1;
    const inFlight = this.running.size;
    const pending = [...this.commits.entries()];
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      Promise.allSettled(pending.map(([, p]) => p)).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!drained) for (const [ticket] of pending) ticket.abandoned = true;
    return {
      inFlight,
      waitedFor: pending.length,
      drained,
      failing: inFlight - pending.length,
      waitedMs: Math.round(performance.now() - started),
    };
  }
}
