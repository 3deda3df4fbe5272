import { spawn } from 'node:child_process';
import { join } from 'node:path';
import request from 'supertest';
import { freePort } from '../../support/common.ts';
import { uniquePrefix } from '../support/instance.ts';
import { startWorker } from '../support/worker.ts';

const ROOT = join(__dirname, '..', '..');

describe('the worker process', () => {
  it('exits 1 naming each bad variable, like the API', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/worker.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        DATABASE_URL: 'postgresql://u@h/db',
        MEDIA_PRIMARY_ENDPOINT: 'http://127.0.0.1:9',
        WORKER_PORT: 'x',
        BACKUP_MAX_AGE: 'a day',
      },
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise((r) => child.on('exit', r));
    expect(code).toBe(1);
    expect(stderr.trim().split('\n')).toEqual([
      'config: BACKUP_MAX_AGE: must be a duration such as 26h, 90m, 45s or 7d',
      'config: WORKER_PORT: must be a whole number from 0 to 65535',
    ]);
  }, 20_000);

  it('serves health and metrics on WORKER_PORT, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/worker.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        DATABASE_URL: process.env.TEST_DATABASE_URL ?? '',
        MEDIA_PRIMARY_ENDPOINT: 'http://127.0.0.1:9',
        WORKER_PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'warn',
        INSTANCE_ID: `wp-${uniquePrefix().slice(8, 16)}`,
      },
    });
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    try {
      let live = 0;
      for (let i = 0; i < 100 && live !== 200; i += 1) {
        live = await fetch(`http://127.0.0.1:${port}/health/live`).then(
          (r) => r.status,
          () => 0,
        );
        if (live !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(live).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  }, 30_000);

  it('is not ready while the job queue (Redis) is unreachable, and still live', async () => {
    const w = await startWorker(
      { MEDIA_PRIMARY_ENDPOINT: 'http://127.0.0.1:9', REDIS_URL: `redis://127.0.0.1:${await freePort()}` },
      uniquePrefix(),
    );
    try {
      const ready = await request(w.url).get('/health/ready');
      expect(ready.status).toBe(503);
      expect(ready.body.checks.redis).toBe('unhealthy');
      expect((await request(w.url).get('/health/live')).status).toBe(200);
    } finally {
      await w.stop();
    }
  });
});
