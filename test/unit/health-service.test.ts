import type { DatabaseProbeData, DatabaseTarget, MediaBackendName } from '../../src/domain.ts';
import { HealthService } from '../../src/health/health-service.ts';
import { ProbeRunner } from '../../src/health/probe-runner.ts';
import { Lifecycle } from '../../src/lifecycle/lifecycle.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { captureLogger } from '../support/log-capture.ts';

const data = (inRecovery: boolean): DatabaseProbeData => ({
  inRecovery,
  currentLsn: null,
  receiveLsn: null,
  replayLsn: null,
  replayAt: null,
  receiverStatus: null,
  standbys: [],
  systemId: '1',
  timeline: 1,
  fenced: false,
});

function runner<T>(probe: () => Promise<T>, target: string) {
  return new ProbeRunner<T>(async () => probe(), {
    dependency: 'database',
    target: () => target,
    timeoutMs: 100,
    metrics: createMetrics(),
    logger: captureLogger().logger,
  });
}

function health(options: {
  primaryUp: boolean;
  replicaUp: boolean;
  readOnly: boolean;
  writes?: ReturnType<NonNullable<ConstructorParameters<typeof HealthService>[0]['writes']>>;
  readTarget?: DatabaseTarget;
  stateKnown?: boolean;
}) {
  const down = () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  const runners = new Map<DatabaseTarget, ProbeRunner<DatabaseProbeData>>([
    ['primary', runner(options.primaryUp ? async () => data(false) : down, 'primary')],
    ['replica', runner(options.replicaUp ? async () => data(true) : down, 'replica')],
  ]);
  return new HealthService({
    database: { runners, active: () => 'primary', readTarget: () => options.readTarget ?? 'primary' },
    stateKnown: () => options.stateKnown ?? true,
    media: {
      runners: new Map<MediaBackendName, ProbeRunner<void>>([['primary', runner<void>(async () => undefined, 'primary')]]),
      active: () => 'primary',
      bucket: () => 'b',
    },
    redis: runner<void>(async () => undefined, 'redis'),
    drSummary: () => ({ readOnly: options.readOnly, stateVersion: 1 }),
    writes: () => options.writes ?? { refusal: null, splitBrain: false, writableNodes: ['primary'], fenced: [] },
    lifecycle: new Lifecycle(),
    intervalMs: 1000,
    timeoutMs: 100,
  });
}

describe('HealthService: readiness serves, health tells the truth about writes', () => {
  it('ready while read-only mode is on and only the replica answers; not ready without read-only', async () => {
    // Reads go to the replica (readTarget: the active target is down, the replica is not behind).
    expect(await health({ primaryUp: false, replicaUp: true, readOnly: true, readTarget: 'replica' }).ready()).toEqual({
      status: 'healthy',
      checks: { database: 'degraded', process: 'healthy' },
    });
    // A former primary behind the newest timeline answers, but reads never go to it: not ready.
    expect((await health({ primaryUp: false, replicaUp: true, readOnly: true, readTarget: 'primary' }).ready()).status).toBe('unhealthy');
    expect((await health({ primaryUp: false, replicaUp: true, readOnly: false }).ready()).status).toBe('unhealthy');
    expect((await health({ primaryUp: false, replicaUp: false, readOnly: true }).ready()).status).toBe('unhealthy');
  });

  it('split brain makes /health/database and /health unhealthy with split_brain', async () => {
    const h = health({
      primaryUp: true,
      replicaUp: true,
      readOnly: false,
      writes: { refusal: null, splitBrain: true, writableNodes: ['primary', 'replica'], fenced: [] },
    });
    expect(await h.database(false)).toMatchObject({
      status: 'unhealthy',
      error: { code: 'split_brain' },
      writableNodes: ['primary', 'replica'],
    });
    expect((await h.overall(false)).status).toBe('unhealthy');
    expect((await h.ready()).status).toBe('healthy');
  });

  it('not_writable is unhealthy only while read-only mode is off', async () => {
    const writes = { refusal: { code: 'not_writable', message: 'standby' }, splitBrain: false, writableNodes: [], fenced: [] };
    expect(await health({ primaryUp: true, replicaUp: true, readOnly: false, writes }).database(false)).toMatchObject({
      status: 'unhealthy',
      writable: false,
      error: { code: 'not_writable' },
    });
    // Read-only on while another node takes writes (e.g. the active target is the replica before a switch back): healthy.
    const other = { ...writes, writableNodes: ['replica'] };
    const readOnly = await health({ primaryUp: true, replicaUp: true, readOnly: true, writes: other }).database(false);
    expect(readOnly).toMatchObject({ status: 'healthy', writable: false });
    expect(readOnly.error).toBeUndefined();
    // Issue 10 F3: read-only on and no node takes writes: the mode cannot be lifted, so degraded, not healthy.
    const stuck = await health({ primaryUp: true, replicaUp: true, readOnly: true, writes }).database(false);
    expect(stuck).toMatchObject({ status: 'degraded', writable: false, writableNodes: [], error: { code: 'no_writable_node' } });
  });

  it('reads served from a node on a newer timeline: ready but degraded; an unknown DR state: ready for reads, says so, and /health/database is state_unknown even when the copy says read-only', async () => {
    const h = health({
      primaryUp: true,
      replicaUp: true,
      readOnly: true,
      readTarget: 'replica',
      stateKnown: false,
      writes: {
        refusal: { code: 'state_unknown', message: 'lost' },
        splitBrain: false,
        writableNodes: ['replica'],
        fenced: ['primary'],
      },
    });
    expect(await h.ready()).toEqual({ status: 'healthy', checks: { database: 'degraded', process: 'healthy', drState: 'degraded' } });
    const db = await h.database(false);
    expect(db.status).toBe('unhealthy');
    expect(db.error?.code).toBe('state_unknown');
  });
});
