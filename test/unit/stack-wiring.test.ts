import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stackPrefixes } from '../../scripts/stack-wiring.ts';

describe('npm run stack: the API and the worker share one Redis key prefix', () => {
  it('a stack with its own cluster: one prefix of this run for both; with DATABASE_URL given: the default for both', () => {
    const own = stackPrefixes(true, 1234);
    expect(own.service.redisKeyPrefix).toBe('sav3:stack:1234:');
    expect(own.worker.redisKeyPrefix).toBe(own.service.redisKeyPrefix);
    const shared = stackPrefixes(false);
    expect(shared.worker.redisKeyPrefix).toBe(shared.service.redisKeyPrefix);
  });

  it('scripts/stack.ts hands the service and the worker those prefixes (a worker without one polls the shared sav3: keys)', () => {
    const src = readFileSync(join(__dirname, '..', '..', 'scripts', 'stack.ts'), 'utf8');
    expect(src).toMatch(/createService\([^;]*prefixes\.service\)/);
    expect(src).toMatch(/createWorker\([^;]*prefixes\.worker,?\s*\)/);
    expect(src).not.toMatch(/redisKeyPrefix\s*[:=]/);
  });
});
