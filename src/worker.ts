// The worker process entry point (`npm run worker`, `node dist/worker.js`): the same configuration
// as the API; runs DR jobs and serves /health/live, /health/ready and /metrics on WORKER_PORT.
import { processMain } from './lifecycle/process-main.ts';
import { createWorker } from './worker-service.ts';

processMain('worker', async (config, logger) => {
  const worker = createWorker(config, logger);
  await worker.listen();
  return worker;
});
