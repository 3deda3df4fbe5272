import type { ErrorRequestHandler, Request, RequestHandler } from 'express';
import { AppError, NotFoundError } from './app-error.ts';
import { bodyError } from './json-body.ts';

/** Turns anything thrown into the contract's error shape: {"error":{code,message,requestId,…}}. */
export const errorMiddleware: ErrorRequestHandler = (err, req, res, next) => {
  if (res.headersSent) {
    next(err);
    return;
  }
  let appError: AppError;
  const clientError = clientErrorOf(err);
  if (err instanceof AppError) {
    appError = err;
    // 5xx are logged with their cause (which may name hosts); 4xx are the client's, not errors.
    if (err.status >= 500 && err.cause !== undefined) res.err = err.cause instanceof Error ? err.cause : new Error(String(err.cause));
  } else if (clientError) {
    appError = clientError;
  } else {
    appError = new AppError(500, 'internal', 'internal error');
    res.err = err instanceof Error ? err : new Error(String(err));
  }
  for (const [name, value] of Object.entries(appError.headers ?? {})) res.setHeader(name, value);
  res.status(appError.status).json(errorBody(req, appError));
};

/** The contract's error body for `appError`, with the request's id. */
export function errorBody(req: Request, appError: AppError): { error: Record<string, unknown> } {
  return { error: { code: appError.code, message: appError.message, requestId: String(req.id ?? ''), ...appError.extra } };
}

export const notFoundHandler: RequestHandler = (_req, _res, next) => {
  next(new NotFoundError('no such route'));
};

/**
 * 405 with `Allow` for a path the app serves under other methods (`POST /health`), as Actuator
 * answers; other unmatched requests go on to the 404. `routes` are Express paths as mounted.
 */
export function methodNotAllowed(routes: readonly { method: string; path: string }[]): RequestHandler {
  const table = routes.map((r) => ({ method: r.method.toUpperCase(), pattern: pathPattern(r.path) }));
  return (req, _res, next) => {
    const allowed = new Set(table.filter((r) => r.pattern.test(req.path)).map((r) => r.method));
    if (allowed.has('GET')) allowed.add('HEAD');
    if (allowed.size === 0 || allowed.has(req.method)) {
      next();
      return;
    }
    const allow = [...allowed].join(', ');
    const err = new AppError(405, 'method_not_allowed', `${req.method} is not served here; allowed: ${allow}`);
    err.headers.Allow = allow;
    next(err);
  };
}

/** An Express path (`/admin/jobs/:id`, `/media/*key`) as a regular expression on a request path (case-insensitive, as Express routes). */
function pathPattern(path: string): RegExp {
  const source = path
    .split('/')
    .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment.startsWith('*') ? '.+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${source}/?$`, 'i');
}

/**
 * An error that is the request's fault (an unreadable body, a malformed path) as its 4xx answer,
 * or undefined. Route error handlers that turn unknown errors into a 503 for their dependency
 * must ask this first: an unreadable body is not a database outage.
 */
export function clientErrorOf(err: unknown): AppError | undefined {
  if (err instanceof AppError) return err.status < 500 ? err : undefined;
  const unreadable = bodyError(err);
  if (unreadable) return unreadable;
  // e.g. a path with a malformed percent-encoding (/media/a%zz), which the router cannot decode.
  if (isClientError(err)) return new AppError(400, 'bad_request', 'the request is malformed');
  return undefined;
}

function isClientError(err: unknown): boolean {
  const status = (err as { status?: unknown; statusCode?: unknown } | null)?.status ?? (err as { statusCode?: unknown } | null)?.statusCode;
  return err instanceof URIError || (typeof status === 'number' && status >= 400 && status < 500);
}
