import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/config.ts';

const minimal = { DATABASE_URL: 'postgresql://app:pw@db:5432/sav3', MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000' };

function problemsOf(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('applies the contract defaults when only the required variables are set', () => {
    const config = loadConfig(minimal);
    expect(config).toMatchObject({
      port: 3000,
      host: '0.0.0.0',
      redisUrl: 'redis://127.0.0.1:6379',
      healthTimeoutMs: 1000,
      healthIntervalMs: 5000,
      logLevel: 'info',
      mediaMaxBytes: 104_857_600,
      adminTokens: [],
      migrateOnStart: false,
    });
    expect(config.databaseReplicaUrl).toBeUndefined();
    expect(config.mediaBackup).toBeUndefined();
    expect(config.instanceId).toMatch(new RegExp(`-${process.pid}$`));
  });

  it('names every missing required variable on its own line', () => {
    expect(problemsOf({})).toEqual(['DATABASE_URL: required', 'MEDIA_PRIMARY_ENDPOINT: required']);
  });

  it('reports each invalid value by variable name, one line each', () => {
    const problems = problemsOf({ ...minimal, PORT: 'eighty', HEALTH_TIMEOUT_MS: '-5', LOG_LEVEL: 'loud', REDIS_URL: 'http://x' });
    expect(problems).toHaveLength(4);
    expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['HEALTH_TIMEOUT_MS', 'LOG_LEVEL', 'PORT', 'REDIS_URL']);
  });

  it('never prints a secret value, even an invalid one', () => {
    const problems = problemsOf({
      DATABASE_URL: 'mysql://app:hunter2-db-password@db/sav3',
      MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000/path-not-allowed',
      MEDIA_PRIMARY_ACCESS_KEY: 'AKIA-ONLY-ACCESS',
      ADMIN_TOKENS: 'ops:operator:short-secret-42,bad:root:another-long-enough-secret-value',
    });
    const text = problems.join('\n');
    expect(text).not.toMatch(/hunter2|short-secret-42|another-long-enough|AKIA-ONLY/);
    expect(problems).toEqual(
      expect.arrayContaining([
        'DATABASE_URL: must be a postgresql:// URL',
        expect.stringMatching(/^ADMIN_TOKENS: entry 1 \(ops\): the token must be at least 24/),
        expect.stringMatching(/^ADMIN_TOKENS: entry 2 \(bad\): role must be viewer or operator/),
        expect.stringMatching(/^MEDIA_PRIMARY_SECRET_KEY: give both/),
      ]),
    );
  });

  it('an ADMIN_TOKENS secret with whitespace is a config error naming the entry, not the secret', () => {
    const problems = problemsOf({ MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000', DATABASE_URL: 'postgresql://db/sav3', ADMIN_TOKENS: 'ops:operator:secret with spaces 0123456789 ' });
    expect(problems).toEqual(['ADMIN_TOKENS: entry 1 (ops): the secret contains whitespace']);
  });

  it('reads NAME_FILE variables (Docker secrets) and strips the trailing newline', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-config-'));
    writeFileSync(join(dir, 'db'), 'postgresql://app:from-file@db/sav3\n');
    writeFileSync(join(dir, 'tokens'), 'ops:operator:a-token-that-is-long-enough-0001\n');
    const config = loadConfig({ MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000', DATABASE_URL_FILE: join(dir, 'db'), ADMIN_TOKENS_FILE: join(dir, 'tokens') });
    expect(config.databaseUrl).toBe('postgresql://app:from-file@db/sav3');
    expect(config.adminTokens.map((t) => [t.name, t.role])).toEqual([['ops', 'operator']]);
  });

  it('refuses a variable given both directly and as a file, and an unreadable file', () => {
    expect(problemsOf({ ...minimal, DATABASE_URL_FILE: '/nonexistent/db' })).toEqual(['DATABASE_URL: set either DATABASE_URL or DATABASE_URL_FILE, not both']);
    expect(problemsOf({ MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000', DATABASE_URL_FILE: '/nonexistent/db' })).toEqual([
      'DATABASE_URL_FILE: cannot read the file it names',
    ]);
  });

  it('takes a backup media store only when its endpoint is set', () => {
    const config = loadConfig({ ...minimal, MEDIA_BACKUP_ENDPOINT: 'https://s3.eu-west-1.amazonaws.com', MEDIA_BACKUP_BUCKET: 'sav3-dr', MEDIA_BACKUP_REGION: 'eu-west-1' });
    expect(config.mediaBackup).toMatchObject({ name: 'backup', bucket: 'sav3-dr', region: 'eu-west-1' });
  });

  it('parses TRUST_PROXY as Express expects it', () => {
    expect(loadConfig({ ...minimal, TRUST_PROXY: '1' }).trustProxy).toBe(1);
    expect(loadConfig({ ...minimal, TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ ...minimal, TRUST_PROXY: 'loopback, 10.0.0.0/8' }).trustProxy).toBe('loopback, 10.0.0.0/8');
  });
});
