/** Base of every error that maps to an HTTP answer; services throw these without knowing HTTP. */
export class AppError extends Error {
  /** Extra response headers, e.g. Retry-After or WWW-Authenticate. */
  headers: Record<string, string> = {};

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadRequestError extends AppError {
  constructor(message: string, details?: Record<string, string[]>) {
    super(400, 'bad_request', message, details ? { details } : {});
  }
}

export class NotFoundError extends AppError {
  constructor(message = 'not found') {
    super(404, 'not_found', message);
  }
}

export class PayloadTooLargeError extends AppError {
  constructor(limit: number) {
    super(413, 'payload_too_large', `the body is larger than the limit of ${limit} bytes`, { limit });
  }
}

export class ConflictError extends AppError {
  constructor(message: string, extra: Record<string, unknown> = {}) {
    super(409, 'conflict', message, extra);
  }
}

export class PreconditionFailedError extends AppError {
  constructor(message: string, extra: Record<string, unknown> = {}) {
    super(412, 'precondition_failed', message, extra);
  }
}

/** No live worker takes this kind of job: queuing it would hold its group with nothing to run it. */
export class NoWorkerError extends AppError {
  constructor(kind: string) {
    super(503, 'no_worker', `no live worker takes ${kind} jobs (none announced itself in the last 15 s); start one (npm run worker)`, {
      jobKind: kind,
    });
    this.headers['Retry-After'] = '30';
  }
}

/** A dependency needed for the request is down; the cause is logged, never sent to the client. */
export class DependencyUnavailableError extends AppError {
  constructor(dependency: string, message: string, cause?: unknown) {
    super(503, 'dependency_unavailable', message, { dependency });
    this.cause = cause;
    // Dependencies come back (or are failed over) in seconds: tell clients when to retry.
    this.headers['Retry-After'] = '5';
  }
}
