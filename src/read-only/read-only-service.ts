import type { AuditLog } from '../audit/audit-log.ts';
import { readOnlyActive, type DrState, type ReadOnlyState } from '../dr-state/dr-state.ts';
import type { Change, DrStateService } from '../dr-state/dr-state-service.ts';
import { ConflictError } from '../http/app-error.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';

export interface ReadOnlyRequest {
  enabled: boolean;
  reason: string;
  ttlSeconds?: number;
}

export const DEFAULT_RETRY_AFTER_SECONDS = 30;

class NothingToExpire extends Error {}

/**
 * Read-only mode for every instance. The check on the request path reads the in-memory DR state
 * (no network round trip). A mode with a TTL turns itself off at expiry on every instance at once
 * (each checks the expiry itself); exactly one instance wins the compare-and-set that records it.
 */
export class ReadOnlyService {
  private expiryTimer?: NodeJS.Timeout;

  constructor(
    private readonly deps: {
      dr: DrStateService;
      audit: AuditLog;
      metrics: Pick<Metrics, 'readOnlyMode'>;
      logger: Logger;
      /** Why writes could not work if the mode were lifted now (e.g. the target is a standby), or null. */
      liftBlockedBy?: () => string | null;
      now?: () => number;
    },
  ) {
    deps.dr.onApply((state) => this.onApply(state));
    deps.metrics.readOnlyMode.set(0);
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  isActive(): boolean {
    return readOnlyActive(this.deps.dr.current(), this.now());
  }

  status(): ReadOnlyState & { active: boolean; version: number } {
    const state = this.deps.dr.current();
    return { ...state.readOnly, active: this.isActive(), version: state.version };
  }

  reason(): string | null {
    return this.deps.dr.current().readOnly.reason;
  }

  /** Seconds a client should wait: until the TTL ends when there is one. */
  retryAfterSeconds(): number {
    const expiresAt = this.deps.dr.current().readOnly.expiresAt;
    if (expiresAt === null) return DEFAULT_RETRY_AFTER_SECONDS;
    return Math.max(1, Math.ceil((Date.parse(expiresAt) - this.now()) / 1000));
  }

  set(request: ReadOnlyRequest, by: string): Promise<Change> {
    return this.deps.dr.change((current, now) => ({
      ...current,
      readOnly: request.enabled
        ? {
            enabled: true,
            reason: request.reason,
            since: current.readOnly.enabled && readOnlyActive(current, this.now()) ? current.readOnly.since : now,
            by,
            expiresAt: request.ttlSeconds === undefined ? null : new Date(this.now() + request.ttlSeconds * 1000).toISOString(),
          }
        : { enabled: false, reason: request.reason, since: now, by, expiresAt: null },
    }));
  }

  private onApply(state: DrState): void {
    clearTimeout(this.expiryTimer);
    this.deps.metrics.readOnlyMode.set(this.isActive() ? 1 : 0);
    const { enabled, expiresAt } = state.readOnly;
    if (!enabled || expiresAt === null) return;
    const delay = Math.max(0, Date.parse(expiresAt) - this.now());
    this.expiryTimer = setTimeout(() => void this.expire(expiresAt), delay);
    this.expiryTimer.unref();
  }

  /** Records the expiry in the shared state; the instance whose compare-and-set wins audits it. */
  private async expire(expiresAt: string): Promise<void> {
    this.deps.metrics.readOnlyMode.set(0);
    // A TTL never expires into a state where writes cannot work (e.g. the active target is an
    // unpromoted standby): the mode stays on, says why, and the refusal is audited.
    const blocked = this.deps.liftBlockedBy?.() ?? null;
    try {
      const change = await this.deps.dr.change((current, now) => {
        if (!current.readOnly.enabled || current.readOnly.expiresAt !== expiresAt) throw new NothingToExpire();
        if (blocked) {
          const reason = `kept on at TTL expiry: ${blocked} (was: ${current.readOnly.reason ?? ''})`.slice(0, 500);
          return { ...current, readOnly: { ...current.readOnly, reason, by: 'system:ttl', expiresAt: null } };
        }
        return { ...current, readOnly: { enabled: false, reason: `expired: ${current.readOnly.reason ?? ''}`.trim(), since: now, by: 'system:ttl', expiresAt: null } };
      });
      if (blocked) this.deps.logger.warn({ reason: blocked }, 'read-only TTL reached, but writes could not work: the mode stays on');
      await this.deps.audit.record({
        actor: 'system:ttl',
        role: null,
        action: 'read_only.expire',
        result: blocked ? 'refused' : 'success',
        before: change.before.readOnly,
        after: change.after.readOnly,
        detail: { version: change.after.version },
        requestId: null,
      });
    } catch (err) {
      if (err instanceof NothingToExpire || err instanceof ConflictError) return;
      // Redis down: every instance already treats the mode as off; the record waits for the next expiry check.
      this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'read-only expiry not recorded yet');
      this.expiryTimer = setTimeout(() => void this.expire(expiresAt), 1000);
      this.expiryTimer.unref();
    }
  }

  stop(): void {
    clearTimeout(this.expiryTimer);
  }
}
