// The process entry point: environment → config → service → listen → shutdown on SIGTERM/SIGINT.
import { processMain } from './lifecycle/process-main.ts';
import { createService } from './service.ts';

processMain('service', async (config, logger) => {
  const service = await createService(config, logger);
  await service.listen();
  return service;
});
