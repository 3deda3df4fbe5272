import express from 'express';

/**
 * JSON bodies, bounded, refusing the NUL character anywhere in a string or key: PostgreSQL cannot
 * store it in text or jsonb, so a NUL accepted here would fail later as a database error (a 503
 * that blames the database, or an audit event that can never be written). Refused as 400.
 */
export function jsonBody(options: { limit: string; type?: () => boolean }): express.RequestHandler {
  return express.json({
    ...options,
    reviver: (key, value: unknown) => {
      if (key.includes('\u0000') || (typeof value === 'string' && value.includes('\u0000')))
        throw new SyntaxError('NUL characters are not accepted');
      return value;
    },
  });
}
