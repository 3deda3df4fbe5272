// A real Prometheus server (Debian's `prometheus`) scrapes two running instances with the shipped
// scrape settings of the `api` job; only the targets (and the interval, to keep the test short)
// are changed for this machine.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, startInstance, uniquePrefix, type TestInstance } from '../support/instance.ts';
import { eventually, freePort } from '../../support/common.ts';

interface ScrapeConfig {
  job_name: string;
  metrics_path?: string;
  scrape_interval?: string;
  scrape_timeout?: string;
  static_configs: { targets: string[] }[];
}

describe('Prometheus scraping two instances', () => {
  let s3: S3ServerHandle;
  let a: TestInstance;
  let b: TestInstance;
  let prometheus: ChildProcess;
  let dir: string;
  let base: string;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'prom-media' });
    const prefix = uniquePrefix();
    a = await startInstance({ ...mediaEnv('PRIMARY', s3), INSTANCE_ID: 'prom-a' }, prefix);
    b = await startInstance({ ...mediaEnv('PRIMARY', s3), INSTANCE_ID: 'prom-b' }, prefix);
    const shipped = parse(readFileSync(join(__dirname, '..', '..', 'monitoring', 'prometheus.yml'), 'utf8')) as {
      scrape_configs: ScrapeConfig[];
    };
    const job = shipped.scrape_configs.find((j) => j.job_name === 'api')!;
    const config = {
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      scrape_configs: [
        { ...job, scrape_interval: '1s', scrape_timeout: '1s', static_configs: [{ targets: [new URL(a.url).host, new URL(b.url).host] }] },
      ],
    };
    dir = mkdtempSync(join(tmpdir(), 'sav3-prometheus-'));
    writeFileSync(join(dir, 'prometheus.yml'), stringify(config));
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      {
        stdio: 'ignore',
      },
    );
  }, 30_000);

  afterAll(async () => {
    prometheus?.kill();
    await a?.stop();
    await b?.stop();
    await s3?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const query = async (q: string) => {
    const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`).catch(() => undefined);
    if (!res?.ok) return [];
    return ((await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } }).data.result;
  };

  it('finds both instances up and returns the service metrics of each', async () => {
    const up = await eventually(
      () => query('up{job="api"}'),
      (r) => r.length === 2 && r.every((s) => s.value[1] === '1'),
      15_000,
    );
    expect(up.map((s) => s.metric.instance).sort()).toEqual([new URL(a.url).host, new URL(b.url).host].sort());
    const versions = await eventually(
      () => query('sav3_dr_state_version'),
      (r) => r.length === 2,
      5000,
    );
    expect(versions).toHaveLength(2);
    const deps = await query('sav3_dependency_up{dependency="database"}');
    expect(deps.map((s) => s.metric.instance).sort()).toEqual([new URL(a.url).host, new URL(b.url).host].sort());
    // The dashboard's and alerts' aggregate queries evaluate.
    expect(await query('max(sav3_dr_state_version) != min(sav3_dr_state_version)')).toEqual([]);
  }, 30_000);
});
