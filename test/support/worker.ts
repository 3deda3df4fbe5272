import type { BackupTool } from '../../src/services/backup/pgbackrest.ts';
import { loadConfig } from '../../src/config/config.ts';
import type { JobHandler } from '../../src/services/jobs/job-runner.ts';
import { createWorker, type Worker } from '../../src/worker-service.ts';
import { captureLogger } from './log-capture.ts';

export interface TestWorker {
  url: string;
  worker: Worker;
  logs: () => string;
  stop(): Promise<void>;
}

/** Starts a worker as worker.ts would, on a free port, with captured logs. */
export async function startWorker(
  env: Record<string, string | undefined>,
  redisKeyPrefix: string,
  extraHandlers?: Map<string, JobHandler>,
  tool?: BackupTool,
): Promise<TestWorker> {
  const config = loadConfig({
    DATABASE_URL: process.env.TEST_DATABASE_URL,
    PORT: '0',
    WORKER_PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'debug',
    HEALTH_TIMEOUT_MS: '500',
    SHUTDOWN_TIMEOUT_MS: '5000',
    WORKER_POLL_MS: '50',
    ...env,
  });
  const { logger, text } = captureLogger();
  const worker = createWorker(config, logger, { redisKeyPrefix, extraHandlers, tool });
  const address = await worker.listen();
  let stopped = false;
  return {
    url: `http://127.0.0.1:${address.port}`,
    worker,
    logs: text,
    async stop() {
      if (stopped) return;
      stopped = true;
      await worker.stop();
    },
  };
}
