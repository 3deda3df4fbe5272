import { timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import { sha256, type AdminRole, type AdminToken } from '../config/admin-tokens.ts';
import { AppError } from '../http/app-error.ts';
import { bearerToken } from '../http/bearer.ts';
import type { Logger } from '../logger.ts';
import type { FailedAuthLimiter } from './failed-auth-limiter.ts';

export interface AdminPrincipal {
  name: string;
  role: AdminRole;
}

const READ_METHODS = new Set(['GET', 'HEAD']);

export function principal(res: Response): AdminPrincipal {
  const admin = res.locals.admin as AdminPrincipal | undefined;
  if (!admin) throw new Error('admin route without authentication');
  return admin;
}

function unauthorized(message: string, invalid: boolean): AppError {
  const err = new AppError(401, 'unauthorized', message);
  err.headers['WWW-Authenticate'] = invalid ? 'Bearer realm="sav3-admin", error="invalid_token"' : 'Bearer realm="sav3-admin"';
  return err;
}

/**
 * Bearer-token authentication for /admin: 401 without a known token, 429 for failures from an
 * address that failed repeatedly, 403 when a viewer tries to change state (reported to
 * `onForbidden` for the audit log). The token itself is never logged or echoed.
 *
 * A valid token always works, even from a throttled address (an operator behind the same NAT as a
 * scanner must not be locked out mid-incident): throttling only answers failures with 429, and a
 * success does not clear the address's failures (it would reset the scanner's back-off).
 */
export function adminAuth(deps: {
  tokens: readonly AdminToken[];
  limiter: FailedAuthLimiter;
  logger: Logger;
  onForbidden: (req: Request, admin: AdminPrincipal) => Promise<void>;
}): RequestHandler {
  return async (req, res, next) => {
    const address = req.ip ?? 'unknown';
    const presented = bearerToken(req);
    const token = checkAdminToken(deps, address, presented);
    if (!token) {
      deps.logger.warn(
        { address, method: req.method, path: req.path, tokenPresented: presented !== undefined },
        'admin authentication failed',
      );
      throw unauthorized(presented === undefined ? 'an admin bearer token is required' : 'the token is not valid', presented !== undefined);
    }
    const admin: AdminPrincipal = { name: token.name, role: token.role };
    res.locals.admin = admin;
    if (!READ_METHODS.has(req.method) && admin.role !== 'operator') {
      await deps.onForbidden(req, admin);
      throw new AppError(403, 'forbidden', 'the viewer role may only read; changing state needs an operator token');
    }
    next();
  };
}

/**
 * Finds the token matching a presented bearer value. Every configured digest is compared, in
 * constant time, so the answer's timing says nothing about which entry (if any) matched.
 */
export function matchAdminToken(tokens: readonly AdminToken[], presented: string): AdminToken | undefined {
  const digest = sha256(presented);
  let found: AdminToken | undefined;
  for (const token of tokens) {
    if (timingSafeEqual(token.digest, digest) && found === undefined) found = token;
  }
  return found;
}

/**
 * The one token check of the service, used by the admin API and by health (which reveals raw
 * errors to a token holder): the matching token, or undefined after counting a failed attempt for
 * the address; 429 instead while the address is throttled. A valid token always passes.
 */
export function checkAdminToken(
  deps: { tokens: readonly AdminToken[]; limiter: FailedAuthLimiter },
  address: string,
  presented: string | undefined,
): AdminToken | undefined {
  const token = presented === undefined ? undefined : matchAdminToken(deps.tokens, presented);
  if (token) return token;
  throwIfThrottled(deps.limiter, address);
  deps.limiter.fail(address);
  return undefined;
}

/** 429 with Retry-After while an address is throttled for failed token checks (admin API and alert webhook). */
export function throwIfThrottled(limiter: FailedAuthLimiter, address: string): void {
  const wait = limiter.retryAfter(address);
  if (wait > 0) {
    const err = new AppError(429, 'too_many_requests', 'too many failed authentication attempts; try again later');
    err.headers['Retry-After'] = String(wait);
    throw err;
  }
}
