// A real load balancer in front of two instances: HAProxy (Traefik cannot be installed here),
// checking /health/ready exactly as the shipped Traefik configuration does.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { eventually, freePort } from '../../support/common.ts';

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function get(url: string): Promise<{ status: number; servedBy: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, servedBy: String(res.headers['x-served-by'] ?? '') }));
    });
    req.on('error', () => resolve({ status: 0, servedBy: '' }));
  });
}

describe('HAProxy in front of two instances', () => {
  let s3: S3ServerHandle;
  let dir: string;
  let haproxy: ChildProcess;
  const proxies: Record<string, TcpProxy> = {};
  const instances: Record<string, TestInstance> = {};
  const ports: Record<string, number> = {};
  let lb: string;
  let stats: string;
  const prefix = uniquePrefix();

  const start = async (name: 'a' | 'b') => {
    const db = new URL(process.env.TEST_DATABASE_URL!);
    db.port = String(proxies[name]!.port);
    instances[name] = await startInstance(
      {
        ...mediaEnv('PRIMARY', s3),
        DATABASE_URL: db.toString(),
        PORT: String(ports[name]),
        INSTANCE_ID: `lb-${name}`,
        HEALTH_INTERVAL_MS: '200',
        HEALTH_TIMEOUT_MS: '300',
      },
      prefix,
    );
  };

  const serverStatus = async (): Promise<Record<string, string>> => {
    const csv = await fetch(`${stats}/stats;csv`)
      .then((r) => r.text())
      .catch(() => '');
    const result: Record<string, string> = {};
    for (const line of csv.split('\n')) {
      const cols = line.split(',');
      if (cols[0] === 'api' && (cols[1] === 'a' || cols[1] === 'b')) result[cols[1]] = cols[17]!;
    }
    return result;
  };

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'lb-media' });
    const dbPort = Number(new URL(process.env.TEST_DATABASE_URL!).port || 5432);
    for (const name of ['a', 'b']) {
      proxies[name] = await startTcpProxy(dbPort);
      ports[name] = await freePort();
    }
    await start('a');
    await start('b');
    const [lbPort, statsPort] = [await freePort(), await freePort()];
    dir = mkdtempSync(join(tmpdir(), 'sav3-haproxy-'));
    writeFileSync(
      join(dir, 'haproxy.cfg'),
      `global
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend fe
  bind 127.0.0.1:${lbPort}
  default_backend api
backend api
  balance roundrobin
  option httpchk GET /health/ready
  http-check expect status 200
  default-server inter 200ms fall 2 rise 2
  http-response set-header X-Served-By %s
  server a 127.0.0.1:${ports.a} check
  server b 127.0.0.1:${ports.b} check
listen stats
  bind 127.0.0.1:${statsPort}
  stats enable
  stats uri /stats
`,
    );
    haproxy = spawn('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], { stdio: 'ignore' });
    lb = `http://127.0.0.1:${lbPort}`;
    stats = `http://127.0.0.1:${statsPort}`;
    await eventually(serverStatus, (s) => s.a === 'UP' && s.b === 'UP', 5000);
  }, 30_000);

  afterAll(async () => {
    haproxy?.kill();
    agent.destroy();
    for (const i of Object.values(instances)) await i.stop();
    for (const p of Object.values(proxies)) await p.close();
    await s3?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('balances over both instances while both are ready', async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(`${lb}/health/live`)));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(new Set(answers.map((a) => a.servedBy))).toEqual(new Set(['a', 'b']));
  });

  it('takes an instance whose /health/ready answers 503 out of rotation, and puts it back when it recovers', async () => {
    proxies.a!.setMode('refuse');
    expect(await eventually(serverStatus, (s) => s.a?.startsWith('DOWN') === true, 5000)).toMatchObject({
      a: expect.stringMatching(/^DOWN/),
      b: 'UP',
    });
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(`${lb}/health/live`)));
    expect(answers.map((a) => a.servedBy)).toEqual(Array(20).fill('b'));

    proxies.a!.setMode('pass');
    expect(await eventually(serverStatus, (s) => s.a === 'UP', 5000)).toMatchObject({ a: 'UP', b: 'UP' });
    const after = await Promise.all(Array.from({ length: 20 }, () => get(`${lb}/health/live`)));
    expect(after.map((a) => a.servedBy)).toContain('a');
  });

  it('a rolling restart (SIGTERM-style stop, start again, then the other) under steady traffic loses no request', async () => {
    let running = true;
    const results: { status: number; servedBy: string }[] = [];
    const traffic = Promise.all(
      Array.from({ length: 4 }, async () => {
        while (running) results.push(await get(`${lb}/media?limit=1`));
      }),
    );
    for (const name of ['a', 'b'] as const) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await instances[name]!.stop();
      await start(name);
      await eventually(serverStatus, (s) => s[name] === 'UP', 5000);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    running = false;
    await traffic;
    expect(results.length).toBeGreaterThan(100);
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    expect(new Set(results.map((r) => r.servedBy))).toEqual(new Set(['a', 'b']));
  });
});
