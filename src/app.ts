import express, { type Router } from 'express';
import helmet from 'helmet';
import type { FailedAuthLimiter } from './admin/failed-auth-limiter.ts';
import type { AdminToken } from './config/admin-tokens.ts';
import type { Config } from './config/config.ts';
import { healthRoutes } from './routes/health-routes.ts';
import type { HealthService } from './health/health-service.ts';
import { errorMiddleware, methodNotAllowed, notFoundHandler } from './http/error-middleware.ts';
import { requestLogger } from './http/request-logger.ts';
import type { Lifecycle } from './lifecycle/lifecycle.ts';
import type { Logger } from './logger.ts';
import { httpMetrics } from './metrics/http-metrics.ts';
import type { Metrics } from './metrics/metrics.ts';
import { metricsRoutes } from './routes/metrics-routes.ts';
import { adminAllowList } from './config/config.ts';
import { adminNetworkGuard } from './admin/admin-network-guard.ts';
import { openApiHandler, ROUTES } from './http/openapi.ts';

export interface AppDeps {
  config: Pick<Config, 'trustProxy'> & Partial<Pick<Config, 'metricsPort' | 'adminAllowList'>>;
  adminTokens: readonly AdminToken[];
  logger: Logger;
  metrics: Metrics;
  lifecycle: Lifecycle;
  health: HealthService;
  /** Middleware that runs before every route, health included (the X-Read-Only header). */
  headers?: express.RequestHandler[];
  /** Middleware that runs before application routes (the read-only guard). */
  guards?: express.RequestHandler[];
  /** The admin API: authentication, then its routers, under /admin with bounded JSON bodies. */
  admin?: { json: express.RequestHandler; auth: express.RequestHandler; routers: Router[] };
  /** Failed token checks per address, shared by the admin API and health (which reveals details to a token). */
  authLimiter: FailedAuthLimiter;
  /**
   * Application routes without admin authentication, behind the guards and mounted in this order
   * before /admin (media, status page, Alertmanager webhook with its own token).
   */
  routers?: Router[];
}

/** Builds the Express app from its parts; it never listens (server.ts does, tests use supertest). */
export function buildApp(deps: AppDeps): express.Express {
  const app = express();
  // Every answer, also the ones mounted before helmet (health): no framework banner.
  app.disable('x-powered-by');
  if (deps.config.trustProxy !== undefined) app.set('trust proxy', deps.config.trustProxy);
  app.set('etag', false);
  app.use(httpMetrics(deps.metrics));
  for (const header of deps.headers ?? []) app.use(header);
  // Health is polled by load balancers many times a second: it answers before request logging
  // and security headers (which it does not need), so polling costs as little as possible.
  app.use(healthRoutes(deps.health, deps.lifecycle, deps.adminTokens, deps.authLimiter));
  app.use(requestLogger(deps.logger));
  app.use(helmet());
  // While draining, every answer closes its connection so keep-alive clients move to other instances.
  app.use((_req, res, next) => {
    if (deps.lifecycle.shuttingDown) res.setHeader('Connection', 'close');
    next();
  });
  for (const guard of deps.guards ?? []) app.use(guard);
  // With METRICS_PORT, /metrics lives only on the internal listener (service.ts).
  if (deps.config.metricsPort === undefined) app.use(metricsRoutes(deps.metrics.registry));
  app.get('/openapi.json', openApiHandler());
  for (const router of deps.routers ?? []) app.use(router);
  if (deps.admin) {
    // Network first (default: loopback only), then body limit and tokens.
    app.use('/admin', adminNetworkGuard(deps.config.adminAllowList ?? adminAllowList(undefined)), deps.admin.json, deps.admin.auth);
    for (const router of deps.admin.routers) app.use(router);
  }
  app.use(methodNotAllowed(deps.config.metricsPort === undefined ? ROUTES : ROUTES.filter((r) => r.path !== '/metrics')));
  app.use(notFoundHandler);
  app.use(errorMiddleware);
  return app;
}
