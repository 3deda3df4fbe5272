import { execFileSync } from 'node:child_process';
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, startInstance, type TestInstance } from '../support/instance.ts';

describe('/metrics', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;

  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'metrics-media' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
    await request(api.url).get('/health');
    await request(api.url).get('/media/some/deep/key-1');
    await request(api.url).get('/media/other-key-2');
    await request(api.url).get('/no/such/route');
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('passes promtool check metrics', async () => {
    const res = await request(api.url).get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0.0.4/);
    // promtool exits non-zero (and execFileSync throws) on any problem it finds.
    const out = execFileSync('promtool', ['check', 'metrics'], { input: res.text, encoding: 'utf8' });
    expect(out).toBe('');
  });

  it('labels HTTP requests by route template, never by raw path', async () => {
    const text = (await request(api.url).get('/metrics')).text;
    expect(text).toMatch(/http_request_duration_seconds_count\{method="GET",route="\/media\/\*key",status_code="503|404"\} 2/);
    expect(text).toContain('route="unmatched"');
    expect(text).not.toContain('key-1');
    expect(text).not.toContain('/no/such/route');
  });

  it('exports dependency status and probe durations per dependency, and the default process metrics', async () => {
    const text = (await request(api.url).get('/metrics')).text;
    expect(text).toContain('sav3_dependency_up{dependency="database",target="primary"} 1');
    expect(text).toContain('sav3_dependency_up{dependency="media",target="primary"} 1');
    expect(text).toContain('sav3_dependency_up{dependency="redis",target="redis"} 1');
    expect(text).toMatch(/sav3_dependency_check_duration_seconds_count\{dependency="database"\} \d+/);
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
  });
});
