import { ConfigError, loadConfig } from '../../src/config/config.ts';

const base = { DATABASE_URL: 'postgresql://u@h/db', MEDIA_PRIMARY_ENDPOINT: 'http://127.0.0.1:9000' };
const problems = (env: Record<string, string>) => {
  try {
    loadConfig({ ...base, ...env });
    return [];
  } catch (err) {
    return (err as ConfigError).problems;
  }
};

describe('backup configuration', () => {
  it('defaults: not configured, 26 h bounds, no schedule, worker on 3001', () => {
    const { backup } = loadConfig(base);
    expect(backup).toMatchObject({
      stanza: undefined,
      bin: 'pgbackrest',
      maxAgeSeconds: 93_600,
      validationMaxAgeSeconds: 93_600,
      validateIntervalSeconds: 0,
      runningMaxSeconds: 3600,
      workerPort: 3001,
      osUser: 'postgres',
    });
  });

  it('reads durations with units, and off', () => {
    const { backup } = loadConfig({
      ...base,
      BACKUP_MAX_AGE: '90m',
      BACKUP_VALIDATION_MAX_AGE: '7d',
      BACKUP_VALIDATE_INTERVAL: '24h',
      PGBACKREST_STANZA: 'main',
    });
    expect(backup).toMatchObject({
      maxAgeSeconds: 5400,
      validationMaxAgeSeconds: 604_800,
      validateIntervalSeconds: 86_400,
      stanza: 'main',
    });
    expect(loadConfig({ ...base, BACKUP_VALIDATE_INTERVAL: 'off' }).backup.validateIntervalSeconds).toBe(0);
    expect(loadConfig({ ...base, BACKUP_MAX_AGE: '3600' }).backup.maxAgeSeconds).toBe(3600);
    expect(loadConfig({ ...base, BACKUP_RUNNING_MAX: '3h' }).backup.runningMaxSeconds).toBe(10_800);
  });

  it.each([
    ['BACKUP_MAX_AGE', '26 hours'],
    ['BACKUP_MAX_AGE', '0'],
    ['BACKUP_VALIDATE_INTERVAL', 'daily'],
    ['PGBACKREST_STANZA', 'main;rm -rf'],
    ['PGBACKREST_CONFIG', 'relative/path.conf'],
    ['PG_BIN', 'bin'],
    ['WORKER_PORT', '70000'],
    ['PGBACKREST_OS_USER', 'Root User'],
  ])('%s=%s stops start-up naming the variable, never echoing the value', (name, value) => {
    const found = problems({ [name]: value });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(new RegExp(`^${name}: `));
    expect(found[0]).not.toContain(value === '0' ? 'value 0' : value);
  });
});
