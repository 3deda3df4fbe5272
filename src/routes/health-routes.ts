import { Router, type Request, type Response } from 'express';
import type { AdminToken } from '../config/admin-tokens.ts';
import { bearerToken } from '../http/bearer.ts';
import type { Lifecycle } from '../lifecycle/lifecycle.ts';
import { checkAdminToken } from '../admin/admin-auth.ts';
import type { FailedAuthLimiter } from '../admin/failed-auth-limiter.ts';
import type { HealthService, HealthStatus } from '../health/health-service.ts';

function send(res: Response, body: { status: HealthStatus } & Record<string, unknown>): void {
  res.setHeader('Cache-Control', 'no-store');
  res.status(body.status === 'unhealthy' ? 503 : 200).json({ ...body, timestamp: new Date().toISOString() });
}

/**
 * Raw error messages name hosts and ports: only a request with a valid admin token sees them. The
 * token check is throttled like the admin one (a wrong token counts as a failed attempt, and is
 * answered 429 while the address is throttled), so health cannot be used to guess tokens faster.
 */
function reveal(req: Request, tokens: readonly AdminToken[], limiter: FailedAuthLimiter): boolean {
  const presented = bearerToken(req);
  // No token is an ordinary load-balancer poll, not a failed attempt.
  if (presented === undefined) return false;
  return checkAdminToken({ tokens, limiter }, req.ip ?? 'unknown', presented) !== undefined;
}

// Express answers HEAD with the GET handler and no body, so each route serves both.
export function healthRoutes(
  health: HealthService,
  lifecycle: Lifecycle,
  tokens: readonly AdminToken[],
  limiter: FailedAuthLimiter,
): Router {
  const router = Router();
  router.get('/health/live', (_req, res) => {
    send(res, { status: lifecycle.shuttingDown ? 'unhealthy' : 'healthy' });
  });
  router.get('/health/ready', async (_req, res) => {
    send(res, await health.ready());
  });
  router.get('/health/database', async (req, res) => {
    send(res, await health.database(reveal(req, tokens, limiter)));
  });
  router.get('/health/media', async (req, res) => {
    send(res, await health.media(reveal(req, tokens, limiter)));
  });
  router.get('/health/redis', async (req, res) => {
    send(res, await health.redis(reveal(req, tokens, limiter)));
  });
  router.get('/health', async (req, res) => {
    send(res, await health.overall(reveal(req, tokens, limiter)));
  });
  return router;
}
