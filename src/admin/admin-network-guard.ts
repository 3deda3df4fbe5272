import type { RequestHandler } from 'express';
import type { AdminAllowList } from '../config/config.ts';
import { AppError } from '../http/app-error.ts';

export class AddressNotAllowedError extends AppError {
  constructor() {
    super(403, 'address_not_allowed', 'the admin API is not reachable from this network address');
  }
}

/**
 * Refuses /admin to clients outside ADMIN_ALLOWED_CIDRS before authentication, so tokens cannot be
 * tried from outside. The address is Express's `req.ip`: behind Traefik (TRUST_PROXY = hop count)
 * the client's own address as the proxy saw it, not one the client wrote into X-Forwarded-For.
 */
export function adminNetworkGuard(allowList: AdminAllowList): RequestHandler {
  return (req, _res, next) => {
    next(allowList.allows(req.ip ?? req.socket.remoteAddress) ? undefined : new AddressNotAllowedError());
  };
}
