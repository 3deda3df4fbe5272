import { spawn } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

function runServer(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.on('exit', (code) => resolve({ code, stderr, stdout }));
  });
}

describe('the server process', () => {
  it('exits 1 with one line per configuration problem, and never prints a secret', async () => {
    const result = await runServer({
      DATABASE_URL: 'mysql://app:db-password-must-not-show@db/x',
      ADMIN_TOKENS: 'ops:operator:tiny-must-not-show',
      MEDIA_PRIMARY_ACCESS_KEY: 'access-key-must-not-show',
      HEALTH_TIMEOUT_MS: 'soon',
    });
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toEqual([
      'config: DATABASE_URL: must be a postgresql:// URL',
      'config: MEDIA_PRIMARY_ENDPOINT: required',
      'config: HEALTH_TIMEOUT_MS: must be a whole number from 10 to 60000',
      'config: MEDIA_PRIMARY_SECRET_KEY: give both MEDIA_PRIMARY_ACCESS_KEY and MEDIA_PRIMARY_SECRET_KEY, or neither',
      'config: ADMIN_TOKENS: entry 1 (ops): the token must be at least 24 characters',
    ]);
    expect(result.stderr + result.stdout).not.toMatch(/must-not-show/);
  }, 20_000);
});
