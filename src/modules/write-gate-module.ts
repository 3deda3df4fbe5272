import type { RequestHandler } from 'express';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { DrStateService } from '../services/dr-state/dr-state-service.ts';
import { readOnlyActive, writeRelevantChange } from '../services/dr-state/dr-state.ts';
import { writeGateMiddleware } from '../http/write-gate-middleware.ts';
import { WriteGate, type WriteRefusal } from '../services/write-gate/write-gate.ts';

/** How long a write barrier waits for commits under way before failing them. */
export const BARRIER_WAIT_MS = 5000;
/**
 * When the lease runs out, commits under way are waited for this long, then failed (never
 * acknowledged): well within the skew allowance other instances give this one's heartbeat.
 */
export const LEASE_BARRIER_WAIT_MS = 500;

/** The write barrier every client write passes through. */
export interface WriteGateModule {
  gate: WriteGate;
  /** Refuses a write while the gate is closed (runs after the read-only guard). */
  guard: RequestHandler;
}

/**
 * Create it right after the DR state and before any capability that follows the state: its
 * state listener is registered first, so the barrier is raised before any other part follows a
 * new state.
 */
export function createWriteGateModule(deps: {
  dr: DrStateService;
  metrics: Metrics;
  logger: Logger;
  /** Further reasons to refuse writes (the database capability: standby, fenced, older timeline). */
  refusal: () => WriteRefusal | null;
  /** The barrier's bounds (default BARRIER_WAIT_MS, LEASE_BARRIER_WAIT_MS; tests shorten them). */
  barrierWaitMs?: number;
  leaseBarrierWaitMs?: number;
}): WriteGateModule {
  const { dr, metrics, logger } = deps;
  const gate = new WriteGate(
    () => {
      if (!dr.known()) {
        const loss = dr.lost();
        return {
          code: 'state_unknown',
          message: loss
            ? `the DR state is unknown: ${loss.reason}; writes are refused until it is restored or reset (POST /admin/dr/state/reset)`
            : 'the DR state is unknown (Redis unreachable since start and no state file); writes are refused until it is known',
        };
      }
      if (dr.leaseExpired()) {
        return {
          code: 'state_stale',
          message: `the shared DR state could not be confirmed in Redis for longer than the lease (${dr.leaseMs} ms); writes are refused until it is`,
        };
      }
      if (readOnlyActive(dr.current())) return { code: 'read_only', message: 'read-only mode is on' };
      return deps.refusal();
    },
    () => dr.current().version,
    {
      // A commit a barrier gave up on is acknowledged only if it finished before the change
      // answered: the change's database fence, raised here on every node that takes writes. A node
      // skipped as fenced read-only does not count: its sessions are ended after the setting is
      // visible, so a commit there may still end after the raise looked at it.
      fenceRaised: async (version) => {
        const report = await dr.fenceRaise(version);
        return (
          report?.databaseFence === 'raised' && Object.values(report.nodes).every((n) => n.outcome === 'raised' || n.outcome === 'standby')
        );
      },
      // Past the fence's own bound (its raise cancels the commits holding it up within 1 s).
      settleMs: 2 * BARRIER_WAIT_MS,
    },
  );
  dr.onApply(async (next, previous) => {
    if (!writeRelevantChange(next, previous)) return;
    const report = await gate.barrier(deps.barrierWaitMs ?? BARRIER_WAIT_MS, next.version);
    metrics.writeBarrierWaited.inc(report.waitedFor);
    dr.annotations.barrier = { version: next.version, ...report };
    if (report.inFlight > 0)
      logger.warn(
        { version: next.version, ...report },
        'write barrier: writes running under the previous DR state were waited for or failed',
      );
  });
  // The lease ran out: no commit admitted under the unconfirmed state may be acknowledged later.
  dr.onLeaseLost(() => {
    void gate.barrier(deps.leaseBarrierWaitMs ?? LEASE_BARRIER_WAIT_MS).then((report) => {
      if (report.inFlight > 0) logger.warn({ ...report }, 'lease lost: writes running were waited for or failed');
    });
  });
  return { gate, guard: writeGateMiddleware(gate) };
}
