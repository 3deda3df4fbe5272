import express from 'express';
import { AppError } from './app-error.ts';

/**
 * Why a body could not be read, as the client's fault: never a 5xx (a route's own error handler
 * would otherwise take an unreadable body for a failing dependency and answer 503).
 */
export class BodyError extends AppError {
  constructor(
    status: 400 | 413 | 415,
    /** What was wrong: too_large, unsupported_encoding, unsupported_charset, bad_encoding, invalid_json, unreadable. */
    readonly reason: string,
    message: string,
  ) {
    super(status, status === 413 ? 'payload_too_large' : status === 415 ? 'unsupported_media_type' : 'bad_request', message, { reason });
  }
}

/** `null`, `a number`… when `raw` is valid JSON but no object or array; undefined otherwise. */
function jsonScalarKind(raw: unknown): string | undefined {
  if (typeof raw !== 'string') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (value === null) return 'null';
  if (typeof value === 'object') return undefined;
  return typeof value === 'string' ? 'a string' : typeof value === 'number' ? 'a number' : 'a boolean';
}

/** The zlib codes of a body that is not what its Content-Encoding says. */
const ZLIB_CODES = /^(Z_|ERR_BROTLI|ERR_ZSTD|ERR__?ZLIB)/;

/**
 * Any error of express's body parsers (body-parser, raw-body, zlib) as a BodyError, or undefined
 * for an error that is not about the body. Express conventions: 413 too large, 415 an encoding or
 * charset it cannot decode, 400 for the rest (a body that is not what its encoding says, not JSON,
 * cut short).
 */
export function bodyError(err: unknown): BodyError | undefined {
  if (err instanceof BodyError) return err;
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { type?: unknown; code?: unknown; status?: unknown; statusCode?: unknown; encoding?: unknown; charset?: unknown };
  const type = typeof e.type === 'string' ? e.type : undefined;
  const code = typeof e.code === 'string' ? e.code : undefined;
  switch (type) {
    case 'entity.too.large':
      return new BodyError(413, 'too_large', 'the body is larger than the limit');
    case 'encoding.unsupported':
      return new BodyError(415, 'unsupported_encoding', 'the Content-Encoding is not supported (identity, gzip, deflate or br)');
    case 'charset.unsupported':
      return new BodyError(415, 'unsupported_charset', 'the charset is not supported (send UTF-8)');
    case 'entity.parse.failed': {
      // Strict parsing refuses valid JSON that is not an object or array (null, 1, "x"): say so.
      const kind = jsonScalarKind((err as { body?: unknown }).body);
      if (kind) return new BodyError(400, 'not_an_object', `the body must be a JSON object, not ${kind}`);
      return new BodyError(400, 'invalid_json', 'the body is not valid JSON');
    }
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
    case 'stream.not.readable':
    case 'entity.verify.failed':
      return new BodyError(400, 'unreadable', 'the body could not be read');
  }
  if (code !== undefined && ZLIB_CODES.test(code))
    return new BodyError(400, 'bad_encoding', 'the body is not encoded as its Content-Encoding says');
  return undefined;
}

/**
 * JSON bodies, bounded, refusing the NUL character anywhere in a string or key: PostgreSQL cannot
 * store it in text or jsonb, so a NUL accepted here would fail later as a database error (a 503
 * that blames the database, or an audit event that can never be written). Refused as 400. Every
 * error reading the body reaches the next error handler as a BodyError (see bodyError).
 */
export function jsonBody(options: { limit: string; type?: () => boolean }): express.RequestHandler {
  const parse = express.json({
    ...options,
    reviver: (key, value: unknown) => {
      if (key.includes('\u0000') || (typeof value === 'string' && value.includes('\u0000')))
        throw new SyntaxError('NUL characters are not accepted');
      return value;
    },
  });
  return (req, res, next) => {
    void parse(req, res, (err?: unknown) => {
      if (err === undefined || err === null || err === 'route' || err === 'router') {
        next(err as undefined);
        return;
      }
      // Anything else the parser raises is still about this body: a 400, never a 5xx.
      next(bodyError(err) ?? new BodyError(400, 'unreadable', 'the body could not be read'));
    });
  };
}
