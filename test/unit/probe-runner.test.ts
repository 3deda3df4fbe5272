import { ProbeRunner } from '../../src/health/probe-runner.ts';
import { classifyError, ProbeTimeoutError } from '../../src/health/probe-error.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { captureLogger } from '../support/log-capture.ts';

function runner<T>(probe: (signal: AbortSignal) => Promise<T>, timeoutMs = 100) {
  const metrics = createMetrics();
  const { logger, text } = captureLogger();
  return {
    metrics,
    logs: text,
    runner: new ProbeRunner(probe, { dependency: 'database', target: () => 'primary', timeoutMs, metrics, logger }),
  };
}

describe('ProbeRunner', () => {
  it('shares one in-flight probe among 100 concurrent callers', async () => {
    let calls = 0;
    const { runner: r } = runner(async () => {
      calls += 1;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return 'ok';
    });
    const results = await Promise.all(Array.from({ length: 100 }, () => r.get(0)));
    expect(calls).toBe(1);
    expect(results.every((res) => res.ok && res.data === 'ok')).toBe(true);
  });

  it('answers at the timeout when the probe hangs, and aborts the probe so it can close its connection', async () => {
    let aborted = false;
    const { runner: r, metrics } = runner((signal) => {
      signal.addEventListener('abort', () => {
        aborted = true;
      });
      return new Promise<never>(() => undefined);
    }, 80);
    const started = performance.now();
    const result = await r.run();
    const elapsed = performance.now() - started;
    expect(result.ok).toBe(false);
    expect(result.error?.code).toBe('timeout');
    expect(aborted).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(75);
    expect(elapsed).toBeLessThan(180);
    const up = await metrics.registry.getSingleMetricAsString('sav3_dependency_up');
    expect(up).toContain('sav3_dependency_up{dependency="database",target="primary"} 0');
  });

  it('serves the cached result while it is young enough and probes again when it is not', async () => {
    let calls = 0;
    const { runner: r } = runner(async () => ++calls);
    await r.get(0);
    expect((await r.get(60_000)).data).toBe(1);
    expect((await r.get(-1)).data).toBe(2);
    expect(calls).toBe(2);
  });

  it('logs a WARN once when a dependency goes down and INFO when it comes back', async () => {
    let fail = true;
    const { runner: r, logs } = runner(async () => {
      if (fail) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
      return 1;
    });
    await r.run();
    await r.run();
    fail = false;
    await r.run();
    const lines = logs()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, 'dependency is down'],
      [30, 'dependency is up'],
    ]);
  });
});

describe('classifyError', () => {
  it.each([
    [new ProbeTimeoutError(5), 'timeout'],
    [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), 'connection_refused'],
    [Object.assign(new Error('password authentication failed for user "x"'), { code: '28P01' }), 'auth_failed'],
    [Object.assign(new Error('The access key Id you provided does not exist'), { code: 'InvalidAccessKeyId' }), 'auth_failed'],
    [new Error('WRONGPASS invalid username-password pair'), 'auth_failed'],
    [Object.assign(new Error('database "nope" does not exist'), { code: '3D000' }), 'not_found'],
    [Object.assign(new Error('bucket missing'), { code: 'NoSuchBucket' }), 'not_found'],
    [new Error('something odd'), 'unknown'],
    // PgBouncer refusing a startup parameter names a timeout setting, but nothing timed out.
    [Object.assign(new Error('unsupported startup parameter: statement_timeout'), { code: '08P01' }), 'connection_refused'],
    [Object.assign(new Error('no such database: nope'), { code: '08P01' }), 'not_found'],
    [Object.assign(new Error('no more connections allowed (max_client_conn)'), { code: '08P01' }), 'connection_refused'],
    [Object.assign(new Error('the database system is starting up'), { code: '57P03' }), 'connection_refused'],
    [Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }), 'timeout'],
    [new Error('Connection terminated due to connection timeout'), 'timeout'],
    [new Error('Query read timeout'), 'timeout'],
  ])('maps %s to %s', (err, code) => {
    expect(classifyError(err).code).toBe(code);
  });
});
