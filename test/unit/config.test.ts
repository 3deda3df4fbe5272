import { mkdtempSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminAllowList, ConfigError, loadConfig } from '../../src/config/config.ts';

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
    // Stable across restarts: host and port (the default PORT is 3000).
    expect(config.instanceId).toBe(`${hostname()}:3000`);
    expect(loadConfig({ ...minimal, PORT: '0' }).instanceId).toBe(`${hostname()}-${process.pid}`);
    expect(loadConfig({ ...minimal, INSTANCE_ID: 'api-1' }).instanceId).toBe('api-1');
    // A worker on the same host is named by its own port (WORKER_PORT, 3001 by default).
    expect(config.backup.workerInstanceId).toBe(`${hostname()}:3001`);
  });

  it('DR_STATE_LEASE_MS: 5000 by default, a whole number of at least 3000 (three state re-reads)', () => {
    expect(loadConfig(minimal).drStateLeaseMs).toBe(5000);
    expect(loadConfig({ ...minimal, DR_STATE_LEASE_MS: '3000' }).drStateLeaseMs).toBe(3000);
    for (const bad of ['2999', '1.5', 'soon', '300001']) {
      expect(problemsOf({ ...minimal, DR_STATE_LEASE_MS: bad }).map((p) => p.split(':')[0])).toEqual(['DR_STATE_LEASE_MS']);
    }
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
    const problems = problemsOf({
      MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000',
      DATABASE_URL: 'postgresql://db/sav3',
      ADMIN_TOKENS: 'ops:operator:secret with spaces 0123456789 ',
    });
    expect(problems).toEqual(['ADMIN_TOKENS: entry 1 (ops): the secret contains whitespace']);
  });

  it('reads NAME_FILE variables (Docker secrets) and strips the trailing newline', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-config-'));
    writeFileSync(join(dir, 'db'), 'postgresql://app:from-file@db/sav3\n');
    writeFileSync(join(dir, 'tokens'), 'ops:operator:a-token-that-is-long-enough-0001\n');
    const config = loadConfig({
      MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000',
      DATABASE_URL_FILE: join(dir, 'db'),
      ADMIN_TOKENS_FILE: join(dir, 'tokens'),
    });
    expect(config.databaseUrl).toBe('postgresql://app:from-file@db/sav3');
    expect(config.adminTokens.map((t) => [t.name, t.role])).toEqual([['ops', 'operator']]);
  });

  it('refuses a variable given both directly and as a file, and an unreadable file', () => {
    expect(problemsOf({ ...minimal, DATABASE_URL_FILE: '/nonexistent/db' })).toEqual([
      'DATABASE_URL: set either DATABASE_URL or DATABASE_URL_FILE, not both',
    ]);
    expect(problemsOf({ MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000', DATABASE_URL_FILE: '/nonexistent/db' })).toEqual([
      'DATABASE_URL_FILE: cannot read the file it names',
    ]);
  });

  it('takes a backup media store only when its endpoint is set', () => {
    const config = loadConfig({
      ...minimal,
      MEDIA_BACKUP_ENDPOINT: 'https://s3.eu-west-1.amazonaws.com',
      MEDIA_BACKUP_BUCKET: 'sav3-dr',
      MEDIA_BACKUP_REGION: 'eu-west-1',
    });
    expect(config.mediaBackup).toMatchObject({ name: 'backup', bucket: 'sav3-dr', region: 'eu-west-1' });
  });

  it('parses TRUST_PROXY as Express expects it', () => {
    expect(loadConfig({ ...minimal, TRUST_PROXY: '1' }).trustProxy).toBe(1);
    expect(loadConfig({ ...minimal, TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ ...minimal, TRUST_PROXY: 'loopback, 10.0.0.0/8' }).trustProxy).toBe('loopback, 10.0.0.0/8');
  });
});

describe('edge configuration: METRICS_PORT and ADMIN_ALLOWED_CIDRS', () => {
  it('serves metrics on PORT and admits only loopback to /admin when neither is set (or the list is empty)', () => {
    for (const env of [minimal, { ...minimal, ADMIN_ALLOWED_CIDRS: '' }]) {
      const config = loadConfig(env);
      expect(config.metricsPort).toBeUndefined();
      expect(config.adminAllowList.ranges).toEqual(['loopback']);
      expect(['127.0.0.1', '127.9.8.7', '::1', '::ffff:127.0.0.1'].map((a) => config.adminAllowList.allows(a))).toEqual([
        true,
        true,
        true,
        true,
      ]);
      expect(
        ['10.0.0.1', '172.17.0.1', '192.168.1.1', '::ffff:10.0.0.1', 'fd00::1', '', undefined, 'not-an-ip'].map((a) =>
          config.adminAllowList.allows(a),
        ),
      ).toEqual(Array(8).fill(false));
    }
  });

  it('admits exactly the configured ranges, IPv4 and IPv6, and then no longer loopback', () => {
    const config = loadConfig({ ...minimal, METRICS_PORT: '9100', ADMIN_ALLOWED_CIDRS: ' 10.1.2.0/24, 192.0.2.7 ,fd00:1::/32' });
    expect(config.metricsPort).toBe(9100);
    expect(config.adminAllowList.ranges).toEqual(['10.1.2.0/24', '192.0.2.7/32', 'fd00:1::/32']);
    const allows = (a: string) => config.adminAllowList.allows(a);
    expect(['10.1.2.0', '10.1.2.255', '::ffff:10.1.2.9', '192.0.2.7', 'fd00:1:ffff::1'].map(allows)).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect(['10.1.3.0', '10.1.1.255', '192.0.2.8', 'fd00:2::1', '127.0.0.1', '::1'].map(allows)).toEqual([
      false,
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it('refuses malformed values with one line each, never quoting them', () => {
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '10.0.0.0/x', '::1/129', '300.1.1.1']) {
      expect(problemsOf({ ...minimal, ADMIN_ALLOWED_CIDRS: bad })).toEqual([
        'ADMIN_ALLOWED_CIDRS: must be comma-separated IP addresses or CIDR ranges such as 10.1.2.0/24',
      ]);
    }
    expect(problemsOf({ ...minimal, METRICS_PORT: '0' })).toEqual(['METRICS_PORT: must be a whole number from 1 to 65535']);
    expect(problemsOf({ ...minimal, METRICS_PORT: 'abc' })).toEqual(['METRICS_PORT: must be a whole number from 1 to 65535']);
  });

  it('adminAllowList(undefined) is loopback only', () => {
    expect(adminAllowList(undefined).allows('127.0.0.1')).toBe(true);
    expect(adminAllowList(undefined).allows('192.0.2.1')).toBe(false);
  });
});

describe('incident configuration', () => {
  it('has no receivers and no webhook token by default', () => {
    expect(loadConfig(minimal)).toMatchObject({ notifyWebhookUrls: [], alertmanagerWebhookToken: undefined });
  });

  it('reads NOTIFY_WEBHOOK_URLS as comma-separated http(s) URLs, paths and secrets in paths allowed', () => {
    const config = loadConfig({
      ...minimal,
      NOTIFY_WEBHOOK_URLS: 'https://hooks.slack.com/services/T0/B0/secret , http://mattermost:8065/hooks/abc',
    });
    expect(config.notifyWebhookUrls).toEqual(['https://hooks.slack.com/services/T0/B0/secret', 'http://mattermost:8065/hooks/abc']);
  });

  it('refuses a bad receiver or a short token with one line each, never quoting the value', () => {
    const problems = problemsOf({ ...minimal, NOTIFY_WEBHOOK_URLS: 'ftp://x/secret-in-url', ALERTMANAGER_WEBHOOK_TOKEN: 'short-secret' });
    expect(problems).toEqual([
      'NOTIFY_WEBHOOK_URLS: must be comma-separated http(s) URLs',
      'ALERTMANAGER_WEBHOOK_TOKEN: must be 24-512 printable characters without spaces',
    ]);
    expect(problems.join('\n')).not.toMatch(/secret/);
  });

  it('takes ALERTMANAGER_WEBHOOK_TOKEN from ALERTMANAGER_WEBHOOK_TOKEN_FILE (Docker secrets), but not both', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-cfg-'));
    writeFileSync(join(dir, 'token'), 'a-webhook-token-of-enough-length\n');
    expect(loadConfig({ ...minimal, ALERTMANAGER_WEBHOOK_TOKEN_FILE: join(dir, 'token') }).alertmanagerWebhookToken).toBe(
      'a-webhook-token-of-enough-length',
    );
    expect(
      problemsOf({
        ...minimal,
        ALERTMANAGER_WEBHOOK_TOKEN_FILE: join(dir, 'token'),
        ALERTMANAGER_WEBHOOK_TOKEN: 'a-webhook-token-of-enough-length',
      }),
    ).toEqual(['ALERTMANAGER_WEBHOOK_TOKEN: set either ALERTMANAGER_WEBHOOK_TOKEN or ALERTMANAGER_WEBHOOK_TOKEN_FILE, not both']);
    writeFileSync(join(dir, 'urls'), 'https://hooks.example/one\n');
    expect(loadConfig({ ...minimal, NOTIFY_WEBHOOK_URLS_FILE: join(dir, 'urls') }).notifyWebhookUrls).toEqual([
      'https://hooks.example/one',
    ]);
  });
});
