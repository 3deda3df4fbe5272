import type { RequestHandler } from 'express';
import { AppError } from './app-error.ts';
import { isClientWrite } from './client-write.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { ReadOnlyService } from '../services/read-only/read-only-service.ts';

export class ReadOnlyError extends AppError {
  constructor(reason: string | null, retryAfterSeconds: number) {
    super(503, 'read_only', 'the service is in read-only mode; reads work, changes are refused for now', { reason });
    this.headers['Retry-After'] = String(retryAfterSeconds);
  }
}

/** Marks every response with `X-Read-Only: true` while the mode is on. Runs before every route. */
export function readOnlyHeader(readOnly: ReadOnlyService): RequestHandler {
  return (_req, res, next) => {
    if (readOnly.isActive()) res.setHeader('X-Read-Only', 'true');
    next();
  };
}

/** Refuses mutating requests outside /admin and /health while the mode is on. */
export function readOnlyGuard(readOnly: ReadOnlyService, metrics: Pick<Metrics, 'readOnlyRejections'>): RequestHandler {
  return (req, _res, next) => {
    if (isClientWrite(req.method, req.path) && readOnly.isActive()) {
      metrics.readOnlyRejections.inc();
      throw new ReadOnlyError(readOnly.reason(), readOnly.retryAfterSeconds());
    }
    next();
  };
}
