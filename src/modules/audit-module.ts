import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { Logger } from '../logger.ts';
import { AuditLog } from '../services/audit/audit-log.ts';
import { PrismaAuditSink } from '../services/audit/prisma-audit-sink.ts';
import { RedisAuditSpool } from '../services/audit/redis-audit-spool.ts';

export const AUDIT_FLUSH_INTERVAL_MS = 2000;

/** The audit log: events go to PostgreSQL, through a Redis spool while PostgreSQL does not answer. */
export function createAuditLog(deps: {
  config: Config;
  logger: Logger;
  redis: Redis;
  prefix: string;
  prisma: () => PrismaClient;
  /** See AuditLog's sinkClosed. */
  sinkClosed?: () => boolean;
}): AuditLog {
  const { config, logger, redis, prefix } = deps;
  return new AuditLog({
    sink: new PrismaAuditSink(deps.prisma),
    spool: new RedisAuditSpool(redis, prefix, config.instanceId),
    logger,
    instanceId: config.instanceId,
    flushIntervalMs: AUDIT_FLUSH_INTERVAL_MS,
    ...(deps.sinkClosed ? { sinkClosed: deps.sinkClosed } : {}),
  });
}
