import type { ErrorRequestHandler } from 'express';
import { AppError, DependencyUnavailableError } from './app-error.ts';
import { clientErrorOf } from './error-middleware.ts';

/**
 * Error handler for routes whose unexpected failures all come from one dependency: an AppError
 * and the request's own faults (an unreadable body, a malformed path) pass unchanged; anything
 * else is a 503 naming `dependency`, with `message`.
 */
export function dependencyErrors(dependency: string, message: string): ErrorRequestHandler {
  return (err, _req, _res, next) => {
    next(err instanceof AppError ? err : (clientErrorOf(err) ?? new DependencyUnavailableError(dependency, message, err)));
  };
}
