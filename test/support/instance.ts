import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.ts';
import { createService, type Service, type ServiceOptions } from '../../src/service.ts';
import { createScratchDatabase } from '../../support/scratch-database.ts';
import { mediaEnv } from '../../support/s3-server.ts';
import { captureLogger } from './log-capture.ts';

export const OPERATOR_TOKEN = 'operator-token-0123456789abcdef';
export const VIEWER_TOKEN = 'viewer-token-0123456789abcdef';
export const ADMIN_TOKENS = `ops:operator:${OPERATOR_TOKEN},watch:viewer:${VIEWER_TOKEN}`;

export { mediaEnv };

export interface TestInstance {
  url: string;
  service: Service;
  logs: () => string;
  stop(): Promise<void>;
}

export function uniquePrefix(): string {
  return `sav3test:${randomBytes(4).toString('hex')}:`;
}

/** Starts a whole service instance on a free port, as server.ts would, with captured logs. */
export async function startInstance(
  env: Record<string, string | undefined>,
  redisKeyPrefix = uniquePrefix(),
  options: ServiceOptions = {},
): Promise<TestInstance> {
  const config = loadConfig({
    DATABASE_URL: process.env.TEST_DATABASE_URL,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'debug',
    ADMIN_TOKENS,
    HEALTH_TIMEOUT_MS: '300',
    HEALTH_INTERVAL_MS: '1000',
    SHUTDOWN_TIMEOUT_MS: '2000',
    DR_STATE_FILE: join(tmpdir(), `sav3-dr-state-${randomBytes(6).toString('hex')}.json`),
    ...env,
  });
  const { logger, text } = captureLogger();
  const service = await createService(config, logger, { ...options, redisKeyPrefix });
  const address = await service.listen();
  let stopped = false;
  return {
    url: `http://127.0.0.1:${address.port}`,
    service,
    logs: text,
    async stop() {
      if (stopped) return;
      stopped = true;
      await service.stop();
    },
  };
}

/**
 * A freshly migrated database of the test file's own: media metadata says which versions exist,
 * so a file that syncs or verifies media must not see other files' keys (stored on their S3 servers).
 */
export async function ownDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  return createScratchDatabase('sav3_it');
}
