import { errorMessage } from '../lib/error-message.ts';

export type ProbeErrorCode = 'timeout' | 'connection_refused' | 'auth_failed' | 'not_found' | 'unknown';

export interface ProbeError {
  code: ProbeErrorCode;
  /** Raw message: may name hosts and ports, so it is shown only to admins. */
  message: string;
}

export class ProbeTimeoutError extends Error {
  readonly code = 'ETIMEOUT_PROBE';
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

const CONNECTION = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);
// PostgreSQL: invalid_authorization_specification, invalid_password; S3 and Redis names.
const AUTH = new Set(['28000', '28P01', 'AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'NOAUTH', 'WRONGPASS']);
// PostgreSQL: invalid_catalog_name (no such database); S3: no such bucket.
const NOT_FOUND = new Set(['3D000', 'NoSuchBucket', 'NotFound']);
// PostgreSQL: query_canceled (statement_timeout), lock_not_available (lock_timeout).
const TIMEOUT = new Set(['ETIMEDOUT', '57014', '55P03']);
// PostgreSQL: class 08 (connection exception; PgBouncer answers most refusals with 08P01),
// admin_shutdown, crash_shutdown, cannot_connect_now (starting up or shutting down).
const SERVER_REFUSED = /^(08...|57P01|57P02|57P03)$/;

/**
 * Maps any driver's error to the contract's small set of codes. "timeout" only for a real timeout:
 * a message that merely names a setting (PgBouncer's "unsupported startup parameter:
 * statement_timeout") is not one.
 */
export function classifyError(err: unknown): ProbeError {
  const message = errorMessage(err);
  const code = String((err as { code?: unknown } | null)?.code ?? '');
  const nested = (err as { errors?: unknown[] } | null)?.errors;
  if (err instanceof ProbeTimeoutError || TIMEOUT.has(code) || /\btime(out|d out)\b/i.test(message)) {
    return { code: 'timeout', message };
  }
  if (AUTH.has(code) || /^(NOAUTH|WRONGPASS)/.test(message) || /password authentication failed|SASL authentication failed/i.test(message)) {
    return { code: 'auth_failed', message };
  }
  if (NOT_FOUND.has(code) || /does not exist|NoSuchBucket|no such database/i.test(message)) {
    return { code: 'not_found', message };
  }
  if (CONNECTION.has(code) || SERVER_REFUSED.test(code) || /ECONNREFUSED|ECONNRESET|Connection terminated|connect ECONN/i.test(message)) {
    return { code: 'connection_refused', message };
  }
  // AggregateError (e.g. connect tried on both ::1 and 127.0.0.1): classify by its first cause.
  if (Array.isArray(nested) && nested.length > 0) return { ...classifyError(nested[0]), message };
  return { code: 'unknown', message };
}
