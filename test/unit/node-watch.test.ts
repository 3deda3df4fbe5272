import type { DatabaseProbeData, DatabaseTarget } from '../../src/domain.ts';
import { INITIAL_STATE, type DrState } from '../../src/services/dr-state/dr-state.ts';
import { NodeWatch } from '../../src/services/database/node-watch.ts';
import type { ProbeResult } from '../../src/health/probe-runner.ts';
import { captureLogger } from '../support/log-capture.ts';

const node = (data: Partial<DatabaseProbeData>): ProbeResult<DatabaseProbeData> => ({
  ok: true,
  latencyMs: 1,
  checkedAt: new Date(),
  data: {
    inRecovery: false,
    currentLsn: null,
    receiveLsn: null,
    replayLsn: null,
    replayAt: null,
    receiverStatus: null,
    standbys: [],
    systemId: '7001',
    timeline: 1,
    fenced: false,
    ...data,
  },
});

function watch(
  probes: Partial<Record<DatabaseTarget, ProbeResult<DatabaseProbeData>>>,
  state: DrState,
  fence: (t: DatabaseTarget) => Promise<{ terminated: number }>,
) {
  const counts: number[] = [];
  const audit = { record: jest.fn(async () => undefined) };
  const w = new NodeWatch({
    latest: (t) => probes[t],
    state: () => state,
    fence,
    onWritableNodes: (n) => counts.push(n),
    audit: audit as never,
    logger: captureLogger().logger,
  });
  return { w, counts, audit };
}

describe('NodeWatch (one writable primary)', () => {
  it('two writable nodes of one cluster: split brain, and the one on the older timeline is fenced', async () => {
    const fenced: DatabaseTarget[] = [];
    const probes = { primary: node({ timeline: 1 }), replica: node({ timeline: 2 }) };
    const state: DrState = { ...INITIAL_STATE, database: { active: 'replica', since: null, by: null } };
    const { w, counts, audit } = watch(probes, state, async (t) => {
      fenced.push(t);
      return { terminated: 3 };
    });
    expect(w.report()).toMatchObject({ splitBrain: true, writableNodes: ['primary', 'replica'] });
    w.observe();
    await new Promise((r) => setImmediate(r));
    expect(fenced).toEqual(['primary']);
    expect(counts).toEqual([2]);
    expect(audit.record).toHaveBeenCalledWith(expect.objectContaining({ action: 'database.fence', result: 'success' }));
  });

  it('when fencing fails, the split brain stays reported; the active node on the older timeline refuses writes', async () => {
    const probes = { primary: node({ timeline: 1 }), replica: node({ timeline: 2 }) };
    const state: DrState = { ...INITIAL_STATE };
    const { w } = watch(probes, state, async () => {
      throw new Error('connection refused');
    });
    w.observe();
    await new Promise((r) => setImmediate(r));
    expect(w.report().splitBrain).toBe(true);
    expect(w.writeRefusal()).toMatchObject({
      code: 'not_writable',
      message: expect.stringContaining('timeline 1, older than the newest (2)'),
    });
  });

  it('a newest timeline recorded in the DR state counts even when the newer node is unreachable', () => {
    const probes = { primary: node({ timeline: 1 }) };
    const state: DrState = {
      ...INITIAL_STATE,
      database: {
        active: 'primary',
        since: null,
        by: null,
        newestTimeline: 2,
        nodes: { replica: { systemId: '7001', timeline: 2, recordedAt: '' } },
      },
    };
    const { w } = watch(probes, state, async () => ({ terminated: 0 }));
    expect(w.writeRefusal()?.code).toBe('not_writable');
  });

  it('a recorded system identifier that differs from the configured node is a state mismatch', () => {
    const probes = { primary: node({ systemId: '8002' }) };
    const state: DrState = {
      ...INITIAL_STATE,
      database: { active: 'primary', since: null, by: null, nodes: { primary: { systemId: '7001', timeline: 1, recordedAt: '' } } },
    };
    const { w } = watch(probes, state, async () => ({ terminated: 0 }));
    expect(w.writeRefusal()?.code).toBe('state_mismatch');
  });

  it('a standby or a fenced node as active target is not writable; an unreachable one is left to fail by itself', () => {
    const state = INITIAL_STATE;
    expect(watch({ primary: node({ inRecovery: true }) }, state, async () => ({ terminated: 0 })).w.writeRefusal()?.code).toBe(
      'not_writable',
    );
    expect(watch({ primary: node({ fenced: true }) }, state, async () => ({ terminated: 0 })).w.writeRefusal()?.code).toBe('not_writable');
    const down: ProbeResult<DatabaseProbeData> = { ok: false, latencyMs: 1, checkedAt: new Date() };
    expect(watch({ primary: down }, state, async () => ({ terminated: 0 })).w.writeRefusal()).toBeNull();
  });

  it('a former primary seen on an older timeline stays refused while it is down, even when the DR state records no promotion', () => {
    // The DR state knows nothing of the failover (Redis came back empty, or it was reset): only
    // what this instance saw tells that the replica was promoted to timeline 2.
    const probes: Partial<Record<DatabaseTarget, ProbeResult<DatabaseProbeData>>> = {
      primary: node({ timeline: 1 }),
      replica: node({ inRecovery: true, timeline: 1 }),
    };
    const state = INITIAL_STATE;
    const { w } = watch(probes, state, async () => ({ terminated: 0 }));
    w.observe();
    expect(w.writeRefusal()).toBeNull();
    // The primary dies; the replica is promoted.
    const down: ProbeResult<DatabaseProbeData> = { ok: false, latencyMs: 1, checkedAt: new Date() };
    probes.primary = down;
    probes.replica = node({ timeline: 2 });
    w.observe();
    const refusal = w.writeRefusal();
    expect(refusal?.code).toBe('not_writable');
    expect(refusal?.message).toMatch(/last seen on timeline 1, older than the newest \(2\)/);
    // A node that was never seen on an older timeline and does not answer is still left to fail by itself.
    const fresh = watch({ primary: down }, INITIAL_STATE, async () => ({ terminated: 0 }));
    fresh.w.observe();
    expect(fresh.w.writeRefusal()).toBeNull();
  });

  it('a promotion a switchover abandoned: its timeline is never the newest, and a node taking writes on it is fenced', async () => {
    const fenced: DatabaseTarget[] = [];
    const probes: Partial<Record<DatabaseTarget, ProbeResult<DatabaseProbeData>>> = {
      primary: node({ timeline: 1 }),
      replica: node({ timeline: 2 }),
    };
    let state: DrState = { ...INITIAL_STATE, database: { active: 'primary', since: null, by: null } };
    const w = new NodeWatch({
      latest: (t) => probes[t],
      state: () => state,
      fence: async (t) => {
        fenced.push(t);
        return { terminated: 0 };
      },
      onWritableNodes: () => undefined,
      audit: { record: async () => undefined } as never,
      logger: captureLogger().logger,
    });
    // Seen before the abandonment: timeline 2 is the newest, the primary is a former primary.
    w.observe();
    expect(w.writeRefusal()).toMatchObject({ code: 'not_writable' });
    fenced.length = 0;
    state = { ...state, database: { ...state.database, abandonedTimelines: [{ systemId: '7001', timeline: 2, node: 'replica', at: '' }] } };
    expect(w.newestTimeline('7001')).toBe(1);
    expect(w.writeRefusal()).toBeNull();
    // The abandoned node still takes writes: it is the one fenced.
    w.observe();
    await new Promise((r) => setImmediate(r));
    expect(fenced).toEqual(['replica']);
    // The active target on an abandoned timeline refuses writes.
    state = { ...state, database: { ...state.database, active: 'replica' } };
    expect(w.writeRefusal()).toMatchObject({ code: 'not_writable', message: expect.stringContaining('abandoned') });
    // Another cluster's timelines are not touched.
    expect(w.abandoned('7002', 2)).toBe(false);
  });
});
