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

describe('incident configuration', () => {
  it('has no receivers and no webhook token by default', () => {
    expect(loadConfig(minimal)).toMatchObject({ notifyWebhookUrls: [], alertmanagerWebhookToken: undefined });
  });

  it('reads NOTIFY_WEBHOOK_URLS as comma-separated http(s) URLs, paths and secrets in paths allowed', () => {
    const config = loadConfig({ ...minimal, NOTIFY_WEBHOOK_URLS: 'https://hooks.slack.com/services/T0/B0/secret , http://mattermost:8065/hooks/abc' });
    expect(config.notifyWebhookUrls).toEqual(['https://hooks.slack.com/services/T0/B0/secret', 'http://mattermost:8065/hooks/abc']);
  });

  it('refuses a bad receiver or a short token with one line each, never quoting the value', () => {
    const problems = problemsOf({ ...minimal, NOTIFY_WEBHOOK_URLS: 'ftp://x/secret-in-url', ALERTMANAGER_WEBHOOK_TOKEN: 'short-secret' });
    expect(problems).toEqual(['NOTIFY_WEBHOOK_URLS: must be comma-separated http(s) URLs', 'ALERTMANAGER_WEBHOOK_TOKEN: must be 24-512 printable characters without spaces']);
    expect(problems.join('\n')).not.toMatch(/secret/);
  });

  it('takes ALERTMANAGER_WEBHOOK_TOKEN from ALERTMANAGER_WEBHOOK_TOKEN_FILE (Docker secrets), but not both', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-cfg-'));
    writeFileSync(join(dir, 'token'), 'a-webhook-token-of-enough-length\n');
    expect(loadConfig({ ...minimal, ALERTMANAGER_WEBHOOK_TOKEN_FILE: join(dir, 'token') }).alertmanagerWebhookToken).toBe('a-webhook-token-of-enough-length');
    expect(problemsOf({ ...minimal, ALERTMANAGER_WEBHOOK_TOKEN_FILE: join(dir, 'token'), ALERTMANAGER_WEBHOOK_TOKEN: 'a-webhook-token-of-enough-length' })).toEqual([
      'ALERTMANAGER_WEBHOOK_TOKEN: set either ALERTMANAGER_WEBHOOK_TOKEN or ALERTMANAGER_WEBHOOK_TOKEN_FILE, not both',
    ]);
    writeFileSync(join(dir, 'urls'), 'https://hooks.example/one\n');
    expect(loadConfig({ ...minimal, NOTIFY_WEBHOOK_URLS_FILE: join(dir, 'urls') }).notifyWebhookUrls).toEqual(['https://hooks.example/one']);
  });
});
