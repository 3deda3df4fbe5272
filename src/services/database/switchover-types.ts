import type { DatabaseTarget } from '../../domain.ts';
import { DR_LOCK_TTL_MS } from '../dr-state/cluster-lock.ts';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import { AppError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';
import type { ReadOnlyService } from '../read-only/read-only-service.ts';
import type { DatabaseClients } from '../../adapters/database-clients.ts';
import type { FailoverLock } from './failover-types.ts';
import type { SqlNodes } from './sql-nodes.ts';
import type { WriteBarrier } from './write-barrier.ts';

/** How far behind the standby may be when a switchover starts: it must catch up within the window. */
export const SWITCHOVER_MAX_LAG_BYTES = 16 * 1024 * 1024;
/** Bound on the wait for the standby to replay everything the fenced primary wrote. */
export const SWITCHOVER_CATCH_UP_MS = 5000;
/** Bound on the write check of a node (the promoted one, or the old primary taking over again). */
export const SWITCHOVER_WRITE_CHECK_MS = 3000;
/** Read-only mode of a switchover lifts itself if the switchover dies midway. */
export const SWITCHOVER_READ_ONLY_TTL_SECONDS = 60;
/** The lock outlives the longest switchover (every step bounded), and no more: see recoverInterrupted. */
/** Short, renewed while the switchover runs (see DR_LOCK_TTL_MS). */
export const SWITCHOVER_LOCK_TTL_MS = DR_LOCK_TTL_MS;
/** The switchover's own TTL'd read-only mode carries this reason: how its leftovers are recognised. */
export const SWITCHOVER_READ_ONLY_REASON = 'switchover:';

export type StepName =
  'read_only_on' | 'fence_old_primary' | 'wait_for_replay' | 'promote' | 'verify_writes' | 'switch' | 'read_only_off' | 'stop_old_primary';
export interface Step {
  name: StepName;
  ok: boolean;
  ms: number;
  detail: string;
}

/** A step of a rollback or roll-forward. */
export interface Outcome {
  name: string;
  ok: boolean;
  detail: string;
}

/** Test seam: runs before each step (a fault injected here interrupts the switchover there). */
export type StepHook = (step: StepName) => Promise<void> | void;

export class SwitchoverFailedError extends AppError {
  constructor(message: string, extra: Record<string, unknown>) {
    super(503, 'switchover_failed', message, extra);
  }
}

export const other = (t: DatabaseTarget): DatabaseTarget => (t === 'primary' ? 'replica' : 'primary');

/** What the switchover needs of its neighbours: narrow, so a test can hand it fakes. */
export interface SwitchoverDeps {
  clients: Pick<DatabaseClients, 'has'>;
  nodes: Pick<SqlNodes, 'facts' | 'fence' | 'unfence' | 'waitForReplay' | 'promote' | 'verifyWrites' | 'stop'>;
  failover: FailoverLock;
  dr: Pick<DrStateService, 'current' | 'waitForInstances'>;
  readOnly: Pick<ReadOnlyService, 'isActive'>;
  barrier: WriteBarrier;
  metrics: Pick<Metrics, 'failoverTotal'>;
  logger: Pick<Logger, 'warn' | 'error'>;
  hook?: StepHook;
  /** Makes `to` the active target of every instance, recording its identity and timeline. */
  recordSwitch: (to: DatabaseTarget, by: string) => Promise<void>;
  /**
   * Records that the promotion of `node` to `timeline` is abandoned (it failed its write check
   * before any instance wrote to it), and waits until every live instance applied that: from then
   * on no instance counts that timeline as the newest, so the old primary may take writes again.
   */
  abandonPromotion: (node: DatabaseTarget, timeline: number, by: string) => Promise<void>;
  /** Before `node` (a standby now, so rebuilt) is promoted: its abandoned promotions are forgotten on every instance. */
  forgetAbandoned: (node: DatabaseTarget) => Promise<void>;
  /** Records a recovery of an interrupted switchover (the audit log). */
  onRecovered?: (what: string) => Promise<void>;
}

export async function attempt(steps: Outcome[], name: string, fn: () => Promise<string>): Promise<boolean> {
  try {
    steps.push({ name, ok: true, detail: await fn() });
    return true;
  } catch (err) {
    steps.push({ name, ok: false, detail: err instanceof Error ? err.message : String(err) });
    return false;
  }
}
