import type { AuditLog } from '../audit/audit-log.ts';
import { readOnlyActive, type DrState, type ReadOnlyState } from '../dr-state/dr-state.ts';
import { StateUnknownError, type Change, type DrStateService } from '../dr-state/dr-state-service.ts';
import { ConflictError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';
import { errorMessage } from '../../lib/error-message.ts';

export interface ReadOnlyRequest {
  enabled: boolean;
  reason: string;
  ttlSeconds?: number;
}

export const DEFAULT_RETRY_AFTER_SECONDS = 30;
/** How often a due expiry that could not take effect is tried again. */
export const EXPIRY_RETRY_MS = 1000;

class NothingToExpire extends Error {}
/** The database target changed between the writability check and the record: check again. */
class TargetChanged extends Error {}

/** A due TTL expiry that did not take effect (yet), and why. */
export interface ExpiryRefusal {
  reason: string;
  at: string;
  expiresAt: string;
  /** `unsafe`: the active target is not verified writable; `unrecorded`: the shared state cannot be written (Redis). */
  kind: 'unsafe' | 'unrecorded';
}

/**
 * Read-only mode for every instance. The check on the request path reads the in-memory DR state
 * (no network round trip). A TTL never lifts the mode by itself: at expiry each instance checks,
 * and the mode goes off only when the active database target is verified writable (a fresh probe)
 * AND the expiry is recorded in the shared state by compare-and-set (exactly one instance wins).
 * Otherwise it stays on, says why (`ttlExpiryRefused`), and the refusal is audited once.
 */
export class ReadOnlyService {
  private expiryTimer?: NodeJS.Timeout;
  /** A refusal this instance saw but could not record (Redis down), for health and the state document. */
  private localRefusal: ExpiryRefusal | null = null;
  /** The refusals already audited (by expiry and kind): audited once, not at every retry. */
  private readonly audited = new Set<string>();

  constructor(
    private readonly deps: {
      dr: DrStateService;
      audit: AuditLog;
      metrics: Pick<Metrics, 'readOnlyMode'>;
      logger: Logger;
      /**
       * Why lifting the mode now would be unsafe, or null when the active target is verified
       * writable (a fresh probe: reachable, primary, not fenced, on the newest timeline). Without
       * it (some service tests) lifting is allowed.
       */
      liftBlockedBy?: () => Promise<string | null> | string | null;
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
    return readOnlyActive(this.deps.dr.current());
  }

  /** Why a due TTL expiry did not take effect, or null. */
  expiryRefused(): ExpiryRefusal | null {
    const state = this.deps.dr.current().readOnly;
    if (!state.enabled) return null;
    if (this.localRefusal && this.localRefusal.expiresAt === state.expiresAt) return this.localRefusal;
    return state.ttlExpiryRefused ? { ...state.ttlExpiryRefused, kind: 'unsafe' } : null;
  }

  /** Fields for the state document and health: the TTL passed but the mode stays on, and why. */
  expiryFacts(): { ttlExpiryRefused?: ExpiryRefusal } {
    const refused = this.expiryRefused();
    return refused ? { ttlExpiryRefused: refused } : {};
  }

  status(): Omit<ReadOnlyState, 'ttlExpiryRefused'> & { active: boolean; version: number; ttlExpiryRefused?: ExpiryRefusal } {
    const state = this.deps.dr.current();
    const { ttlExpiryRefused: _shared, ...readOnly } = state.readOnly;
    return { ...readOnly, ...this.expiryFacts(), active: this.isActive(), version: state.version };
  }

  reason(): string | null {
    return this.deps.dr.current().readOnly.reason;
  }

  /** Seconds a client should wait: until the TTL ends when there is one still ahead. */
  retryAfterSeconds(): number {
    const expiresAt = this.deps.dr.current().readOnly.expiresAt;
    if (expiresAt === null) return DEFAULT_RETRY_AFTER_SECONDS;
    const left = Date.parse(expiresAt) - this.now();
    if (left <= 0) return DEFAULT_RETRY_AFTER_SECONDS;
    return Math.max(1, Math.ceil(left / 1000));
  }

  /**
   * Sets the mode for every instance. `guard` sees the stored state the change would replace and
   * may throw to refuse it (a lift checked against a database target that changed meanwhile).
   */
  set(request: ReadOnlyRequest, by: string, guard?: (current: DrState) => void): Promise<Change> {
    return this.deps.dr.change((current, now) => {
      guard?.(current);
      return {
        ...current,
        readOnly: request.enabled
          ? {
              enabled: true,
              reason: request.reason,
              since: current.readOnly.enabled ? current.readOnly.since : now,
              by,
              expiresAt: request.ttlSeconds === undefined ? null : new Date(this.now() + request.ttlSeconds * 1000).toISOString(),
              ttlExpiryRefused: null,
            }
          : { enabled: false, reason: request.reason, since: now, by, expiresAt: null, ttlExpiryRefused: null },
      };
    });
  }

  private onApply(state: DrState): void {
    clearTimeout(this.expiryTimer);
    this.deps.metrics.readOnlyMode.set(this.isActive() ? 1 : 0);
    const { enabled, expiresAt } = state.readOnly;
    if (this.localRefusal && (!enabled || this.localRefusal.expiresAt !== expiresAt)) this.localRefusal = null;
    if (!enabled || expiresAt === null) return;
    const delay = Math.max(0, Date.parse(expiresAt) - this.now());
    this.expiryTimer = setTimeout(() => void this.expire(expiresAt), delay);
    this.expiryTimer.unref();
  }

  /** For tests: runs the expiry check now, as the timer would. */
  checkExpiry(): Promise<void> {
    const { enabled, expiresAt } = this.deps.dr.current().readOnly;
    if (!enabled || expiresAt === null || Date.parse(expiresAt) > this.now()) return Promise.resolve();
    return this.expire(expiresAt);
  }

  /**
   * At TTL expiry: lifts the mode only when the active target is verified writable and the lift is
   * recorded in the shared state. When the target is not writable and Redis answers, the refusal is
   * recorded (the mode stays on without a TTL, `ttlExpiryRefused` says why) and audited by the
   * instance whose compare-and-set wins. When Redis does not answer, the mode stays on here, the
   * refusal shows in this instance's health and state document, is audited once, and is retried.
   */
  private async expire(expiresAt: string): Promise<void> {
    const checkedDatabase = JSON.stringify(this.deps.dr.current().database);
    let blocked: string | null;
    try {
      blocked = (await this.deps.liftBlockedBy?.()) ?? null;
    } catch (err) {
      blocked = `the active database target could not be checked (${errorMessage(err)})`;
    }
    try {
      const change = await this.deps.dr.change((current, now) => {
        if (!current.readOnly.enabled || current.readOnly.expiresAt !== expiresAt) throw new NothingToExpire();
        if (JSON.stringify(current.database) !== checkedDatabase) throw new TargetChanged();
        if (blocked) {
          const reason = `kept on at TTL expiry: ${blocked} (was: ${current.readOnly.reason ?? ''})`.slice(0, 500);
          return {
            ...current,
            readOnly: {
              ...current.readOnly,
              reason,
              by: 'system:ttl',
              expiresAt: null,
              ttlExpiryRefused: { reason: blocked, at: now, expiresAt },
            },
          };
        }
        return {
          ...current,
          readOnly: {
            enabled: false,
            reason: `expired: ${current.readOnly.reason ?? ''}`.trim(),
            since: now,
            by: 'system:ttl',
            expiresAt: null,
            ttlExpiryRefused: null,
          },
        };
      });
      this.localRefusal = null;
      if (blocked) this.deps.logger.warn({ reason: blocked }, 'read-only TTL reached, but writes could not work: the mode stays on');
      await this.deps.audit.record({
        actor: 'system:ttl',
        role: null,
        action: 'read_only.expire',
        result: blocked ? 'refused' : 'success',
        before: change.before.readOnly,
        after: change.after.readOnly,
        detail: { version: change.after.version, ...(blocked ? { reason: blocked } : {}) },
        requestId: null,
      });
    } catch (err) {
      if (err instanceof NothingToExpire || err instanceof ConflictError) return;
      if (err instanceof TargetChanged) {
        // Follow the newest state first, then judge the target it names.
        await this.deps.dr.sync();
        clearTimeout(this.expiryTimer);
        this.expiryTimer = setTimeout(() => void this.expire(expiresAt), 100);
        this.expiryTimer.unref();
        return;
      }
      // The shared state cannot be written (Redis down): the mode stays on, and the expiry is tried again.
      // Or the shared state is unknown on this instance (lost from Redis, not vouched for).
      const why = err instanceof StateUnknownError ? 'the shared DR state is unknown (lost from Redis)' : 'Redis unreachable';
      const reason = blocked
        ? `${blocked}; and the DR state store cannot record the expiry (${why})`
        : `the expiry cannot be recorded in the shared DR state (${why}): the mode stays on until it can be`;
      const kind = blocked ? 'unsafe' : 'unrecorded';
      this.localRefusal = { reason, at: new Date(this.now()).toISOString(), expiresAt, kind };
      const key = `${expiresAt}:${kind}`;
      if (!this.audited.has(key)) {
        this.audited.add(key);
        this.deps.logger.warn(
          { reason, err: errorMessage(err) },
          'read-only TTL reached, but the expiry did not take effect: the mode stays on',
        );
        await this.deps.audit
          .record({
            actor: 'system:ttl',
            role: null,
            action: 'read_only.expire',
            result: 'refused',
            before: this.deps.dr.current().readOnly,
            after: null,
            detail: { version: this.deps.dr.current().version, reason, kind },
            requestId: null,
          })
          .catch(() => undefined);
      }
      clearTimeout(this.expiryTimer);
      this.expiryTimer = setTimeout(() => void this.expire(expiresAt), EXPIRY_RETRY_MS);
      this.expiryTimer.unref();
    }
  }

  stop(): void {
    clearTimeout(this.expiryTimer);
  }
}
