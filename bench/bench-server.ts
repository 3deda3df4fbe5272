import { tmpdir } from 'node:os';
// The servers under benchmark, in a process of their own so the load generator does not share
// their event loop: the API on the real stack, a bare Express route, and an API whose database hangs.
import express from 'express';
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../src/config/config.ts';
import { createLogger } from '../src/logger.ts';
import { createService } from '../src/service.ts';
import { mediaEnv, startS3Server } from '../support/s3-server.ts';
import { startHungServer } from '../support/hung-server.ts';

async function main(): Promise<void> {
  const s3 = await startS3Server({ bucket: 'bench-media' });
  const base = {
    DATABASE_URL: process.env.BENCH_DATABASE_URL,
    ...mediaEnv('PRIMARY', s3),
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    DR_STATE_FILE: `${tmpdir()}/sav3-bench-${process.pid}.json`,
  };
  const logger = createLogger('silent');
  const api = await createService(loadConfig(base), logger, { redisKeyPrefix: `bench:${process.pid}:` });
  const apiAddress = await api.listen();

  const unguarded = await createService(loadConfig(base), logger, { redisKeyPrefix: `bench:${process.pid}:`, withoutReadOnlyGuard: true });
  const unguardedAddress = await unguarded.listen();

  const hung = await startHungServer();
  const hungApi = await createService(
    loadConfig({ ...base, DATABASE_URL: `postgresql://postgres@${hung.url}/x`, HEALTH_TIMEOUT_MS: '200', HEALTH_INTERVAL_MS: '100' }),
    logger,
    { redisKeyPrefix: `bench:${process.pid}:hung:` },
  );
  const hungAddress = await hungApi.listen();

  const bare = express();
  bare.get('/bare', (_req, res) => {
    res.json({ status: 'healthy', timestamp: new Date().toISOString() });
  });
  const bareServer = bare.listen(0, '127.0.0.1');
  await new Promise((resolve) => bareServer.once('listening', resolve));

  process.send?.({
    api: apiAddress.port,
    unguarded: unguardedAddress.port,
    hungApi: hungAddress.port,
    bare: (bareServer.address() as AddressInfo).port,
  });
  process.on('disconnect', () => process.exit(0));
}

void main();
