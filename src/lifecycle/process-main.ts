// The shared shape of the service's process entry points (server.ts, worker.ts): environment →
// config (exit 1 with one line per problem) → start → stop on SIGTERM/SIGINT, exit 0 when stopped.
import { ConfigError, loadConfig, type Config } from '../config/config.ts';
import { createLogger, type Logger } from '../logger.ts';
import { errorMessage } from '../lib/error-message.ts';

export function processMain(name: string, start: (config: Config, logger: Logger) => Promise<{ stop(): Promise<void> }>): void {
  const main = async () => {
    let config: Config;
    try {
      config = loadConfig(process.env);
    } catch (err) {
      if (err instanceof ConfigError) {
        for (const problem of err.problems) process.stderr.write(`config: ${problem}\n`);
        process.exit(1);
      }
      throw err;
    }
    const logger = createLogger(config.logLevel);
    const running = await start(config, logger);
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, `${name} shutting down`);
      // A last resort if closing hangs; unref'd so it never keeps a finished process alive.
      setTimeout(() => {
        logger.error(`${name} shutdown did not finish in time; exiting`);
        process.exit(1);
      }, config.shutdownTimeoutMs + 5000).unref();
      running.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, `${name} shutdown failed`);
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  };
  main().catch((err: unknown) => {
    process.stderr.write(`fatal: ${errorMessage(err)}\n`);
    process.exit(1);
  });
}
