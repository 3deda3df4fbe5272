import type { ErrorRequestHandler, RequestHandler } from 'express';
import { AppError, NotFoundError } from './app-error.ts';

/** Turns anything thrown into the contract's error shape: {"error":{code,message,requestId,…}}. */
export const errorMiddleware: ErrorRequestHandler = (err, req, res, next) => {
  if (res.headersSent) {
    next(err);
    return;
  }
  const requestId = String(req.id ?? '');
  let appError: AppError;
  if (err instanceof AppError) {
    appError = err;
    // 5xx are logged with their cause (which may name hosts); 4xx are the client's, not errors.
    if (err.status >= 500 && err.cause !== undefined) res.err = err.cause instanceof Error ? err.cause : new Error(String(err.cause));
  } else if (isBodyParserError(err)) {
    appError =
      err.type === 'entity.too.large'
        ? new AppError(413, 'payload_too_large', 'the body is larger than the limit')
        : new AppError(
            err.status ?? 400,
            'bad_request',
            err.type === 'entity.parse.failed' ? 'the body is not valid JSON' : 'the body could not be read',
          );
  } else if (isClientError(err)) {
    // e.g. a path with a malformed percent-encoding (/media/a%zz), which the router cannot decode.
    appError = new AppError(400, 'bad_request', 'the request is malformed');
  } else {
    appError = new AppError(500, 'internal', 'internal error');
    res.err = err instanceof Error ? err : new Error(String(err));
  }
  for (const [name, value] of Object.entries(appError.headers ?? {})) res.setHeader(name, value);
  res.status(appError.status).json({
    error: { code: appError.code, message: appError.message, requestId, ...appError.extra },
  });
};

export const notFoundHandler: RequestHandler = (_req, _res, next) => {
  next(new NotFoundError('no such route'));
};

function isBodyParserError(err: unknown): err is { type: string; status?: number } {
  return typeof err === 'object' && err !== null && typeof (err as { type?: unknown }).type === 'string' && 'status' in err;
}

function isClientError(err: unknown): boolean {
  const status = (err as { status?: unknown; statusCode?: unknown } | null)?.status ?? (err as { statusCode?: unknown } | null)?.statusCode;
  return err instanceof URIError || (typeof status === 'number' && status >= 400 && status < 500);
}
