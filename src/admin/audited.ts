import type { Request, Response } from 'express';
import type { AuditResult } from '../services/audit/audit-event.ts';
import type { AuditLog } from '../services/audit/audit-log.ts';
import type { Change, DrStateService, FenceReport, Propagation } from '../services/dr-state/dr-state-service.ts';
import type { InstanceHeartbeat } from '../services/dr-state/dr-state.ts';
import { AppError } from '../http/app-error.ts';
import { principal } from './admin-auth.ts';

export interface AuditedOutcome<T> {
  body: T;
  before?: unknown;
  after?: unknown;
  result?: AuditResult;
  detail?: unknown;
}

/**
 * Runs an admin change and records it, whatever happens: success or dry run with the state before
 * and after; a refusal (4xx, 503) or failure with the error code. Then rethrows.
 */
export async function audited<T>(
  audit: AuditLog,
  req: Request,
  res: Response,
  action: string,
  run: () => Promise<AuditedOutcome<T>>,
): Promise<T> {
  const admin = principal(res);
  const base = { actor: admin.name, role: admin.role, action, requestId: req.id === undefined ? null : String(req.id) };
  const started = performance.now();
  const took = () => Math.round(performance.now() - started);
  try {
    const outcome = await run();
    await audit.record({
      ...base,
      durationMs: took(),
      result: outcome.result ?? 'success',
      before: outcome.before ?? null,
      after: outcome.after ?? null,
      detail: outcome.detail ?? null,
    });
    return outcome.body;
  } catch (err) {
    const refused = err instanceof AppError && (err.status < 500 || err.status === 503);
    const detail = err instanceof AppError ? { code: err.code, message: err.message } : { code: 'internal' };
    await audit.record({ ...base, durationMs: took(), result: refused ? 'refused' : 'failed', before: null, after: null, detail });
    throw err;
  }
}

/**
 * A change was recorded, but a live instance (heartbeat within the lease) did not report it
 * applied within the bound: not a success, since that instance may still act on the previous state.
 */
export class PropagationIncompleteError extends AppError {
  constructor(version: number, propagation: Propagation, extra: Record<string, unknown> = {}) {
    super(
      504,
      'propagation_incomplete',
      `version ${version} is recorded, but live instances did not report it applied within ${propagation.waitedMs} ms: ${propagation.notApplied.join(', ')}; they may act on the previous state until they apply it or their lease (${propagation.leaseMs} ms) runs out`,
      { ...extra, version, propagation },
    );
  }
}

/**
 * Waits until every live instance applied `version` (instances past their lease refuse writes and
 * are listed as `stale`, not waited for); throws PropagationIncompleteError when one did not.
 */
export async function confirmedPropagation(dr: DrStateService, version: number, extra: Record<string, unknown> = {}): Promise<Propagation> {
  const propagation = await dr.waitForInstances(version);
  if (!propagation.complete) throw new PropagationIncompleteError(version, propagation, extra);
  return propagation;
}

/**
 * The audited outcome of a DR operation that may have changed one part of the shared state: the
 * part before and after, and, once every live instance applied it (bounded), the propagation.
 */
export async function stateChangeOutcome(
  dr: DrStateService,
  result: { change?: Change } & Record<string, unknown>,
  part: 'database' | 'media',
  dryRun: boolean,
): Promise<AuditedOutcome<Record<string, unknown>>> {
  const { change, ...rest } = result;
  if (!change) return { body: rest, result: dryRun ? 'dry_run' : 'success', detail: rest };
  const version = change.after.version;
  const propagation = await confirmedPropagation(dr, version, { [part]: change.after[part] });
  // Database and media switches raise the write barrier on every instance: say how many writes it met.
  const writes = { ...barrierSummary(version, propagation.instances), ...fenceSummary(change.fence) };
  return {
    before: change.before[part],
    after: change.after[part],
    detail: { ...rest, version, writes },
    body: { ...rest, version, [part]: change.after[part], propagation, writes },
  };
}

/**
 * What the write barrier did on every instance that applied `version`: writes running then, the
 * commits waited for (finished before the answer), and the ones that will fail at their commit.
 */
export function barrierSummary(version: number, instances: InstanceHeartbeat[]) {
  const applied = instances.filter((i) => i.barrier?.version === version);
  const sum = (f: (b: NonNullable<InstanceHeartbeat['barrier']>) => number) => applied.reduce((n, i) => n + f(i.barrier!), 0);
  return {
    inFlight: sum((b) => b.inFlight),
    waitedFor: sum((b) => b.waitedFor),
    failing: sum((b) => b.failing),
    drained: applied.every((i) => i.barrier!.drained),
    instancesReporting: applied.length,
  };
}

/**
 * The database write fence part of a change's `writes`: `databaseFence` raised / partial /
 * not_raised (with the reason) and the nodes, or `not_applicable` when the change raised none.
 */
export function fenceSummary(fence: FenceReport | undefined) {
  if (!fence) return { databaseFence: 'not_applicable' as const };
  return {
    databaseFence: fence.databaseFence,
    fenceEpoch: fence.epoch,
    fenceNodes: fence.nodes,
    fenceWaitedMs: fence.waitedMs,
    ...(fence.reason ? { fenceReason: fence.reason } : {}),
  };
}
