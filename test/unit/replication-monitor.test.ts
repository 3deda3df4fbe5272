import type { DatabaseProbeData } from '../../src/domain.ts';
import { divergence, ReplicationMonitor } from '../../src/services/database/replication-monitor.ts';
import { parseTimelineHistory } from '../../src/health/pg-probe.ts';
import type { ProbeResult } from '../../src/health/probe-runner.ts';

const now = Date.parse('2026-11-25T12:00:00Z');
const base: DatabaseProbeData = {
  inRecovery: false,
  currentLsn: null,
  receiveLsn: null,
  replayLsn: null,
  replayAt: null,
  receiverStatus: null,
  standbys: [],
  systemId: null,
  timeline: null,
  fenced: false,
};
const ok = (data: Partial<DatabaseProbeData>): ProbeResult<DatabaseProbeData> => ({
  ok: true,
  latencyMs: 1,
  checkedAt: new Date(now),
  data: { ...base, ...data },
});
const down: ProbeResult<DatabaseProbeData> = {
  ok: false,
  latencyMs: 1,
  checkedAt: new Date(now),
  error: { code: 'connection_refused', message: 'x' },
};

describe('ReplicationMonitor', () => {
  it('an idle, caught-up standby whose last commit is old has no lag (replay_lag NULL means caught up)', () => {
    const monitor = new ReplicationMonitor(30);
    const primary = ok({ currentLsn: '0/3000160', standbys: [{ state: 'streaming', replayLsn: '0/3000100', replayLagSeconds: null }] });
    monitor.observePrimary(primary);
    const replica = ok({ inRecovery: true, replayLsn: '0/3000100', receiverStatus: 'streaming', replayAt: new Date(now - 600_000) });
    expect(monitor.report(primary, replica, now)).toMatchObject({ status: 'healthy', state: 'catching_up', lagSeconds: 0, lagBytes: 96 });
  });

  it('uses the primary measure of replay lag while it answers', () => {
    const monitor = new ReplicationMonitor(30);
    const primary = ok({ currentLsn: '0/4000000', standbys: [{ state: 'streaming', replayLsn: '0/3000000', replayLagSeconds: 45 }] });
    monitor.observePrimary(primary);
    const replica = ok({ inRecovery: true, replayLsn: '0/3000000', receiverStatus: 'streaming', replayAt: new Date(now - 50_000) });
    expect(monitor.report(primary, replica, now)).toMatchObject({ status: 'degraded', lagSeconds: 45, lagBytes: 16_777_216 });
  });

  it('after the primary dies, reports the gap to its last known position and the age of the last replayed commit', () => {
    const monitor = new ReplicationMonitor(30);
    monitor.observePrimary(ok({ currentLsn: '0/3000200' }));
    const replica = ok({ inRecovery: true, replayLsn: '0/3000100', receiverStatus: 'waiting', replayAt: new Date(now - 12_000) });
    expect(monitor.report(down, replica, now)).toMatchObject({
      status: 'degraded',
      state: 'disconnected',
      lagSeconds: 12,
      lagBytes: 256,
      primaryLastKnownLsn: '0/3000200',
    });
  });

  it('says promoted or unreachable when that is what the replica is; a promoted node with no standby is degraded (no failover left)', () => {
    const monitor = new ReplicationMonitor(30);
    expect(monitor.report(undefined, ok({ inRecovery: false, currentLsn: '0/5000000' }), now)).toMatchObject({
      state: 'promoted',
      status: 'degraded',
    });
    expect(monitor.report(undefined, down, now)).toMatchObject({ state: 'unreachable', status: 'degraded' });
  });
});

describe('ReplicationMonitor in either direction', () => {
  it('reports which configured node holds which role once the old primary streams from the promoted replica', () => {
    const monitor = new ReplicationMonitor(30);
    const replica = ok({ currentLsn: '0/7000100', standbys: [{ state: 'streaming', replayLsn: '0/7000000', replayLagSeconds: 0.5 }] });
    const primary = ok({ inRecovery: true, replayLsn: '0/7000000', receiverStatus: 'streaming' });
    monitor.observe('replica', replica);
    monitor.observe('primary', primary);
    expect(monitor.report(primary, replica, now)).toMatchObject({
      status: 'healthy',
      state: 'catching_up',
      roles: { primary: 'standby', replica: 'primary' },
      writer: 'replica',
      standby: 'primary',
      direction: 'replica->primary',
      lagBytes: 256,
      lagSeconds: 0.5,
      primaryLastKnownLsn: '0/7000100',
      replicaReplayLsn: '0/7000000',
    });
  });

  it('keeps the data-loss window of the writer of the moment when it dies', () => {
    const monitor = new ReplicationMonitor(30);
    monitor.observe('replica', ok({ currentLsn: '0/9000000' }));
    monitor.observe('primary', ok({ currentLsn: '0/1000000' }));
    const standby = ok({ inRecovery: true, replayLsn: '0/8FFFF00', receiverStatus: 'waiting', replayAt: new Date(now - 3000) });
    expect(monitor.report(standby, down, now)).toMatchObject({
      writer: 'replica',
      state: 'disconnected',
      lagBytes: 256,
      lagSeconds: 3,
      roles: { primary: 'standby', replica: 'unreachable' },
    });
  });

  it('after a switchover back, the original primary is promoted until the replica streams from it', () => {
    const monitor = new ReplicationMonitor(30);
    monitor.observe('primary', ok({ inRecovery: true, replayLsn: '0/1', receiverStatus: 'streaming' }));
    expect(monitor.report(ok({ currentLsn: '0/2' }), down, now)).toMatchObject({
      writer: 'primary',
      state: 'promoted',
      status: 'degraded',
    });
    // Two servers taking writes: the DR state's active target is the writer of record.
    const split = new ReplicationMonitor(30, () => 'replica');
    expect(split.report(ok({ currentLsn: '0/2' }), ok({ currentLsn: '0/3' }), now)).toMatchObject({
      writer: 'replica',
      standby: 'primary',
      state: 'promoted',
      status: 'degraded',
      roles: { primary: 'primary', replica: 'primary' },
    });
  });
});

describe("a standby diverged from its writer (timelines and the writer's history)", () => {
  // Timeline 3 forked off timeline 2 at 0/800CDD8 (a point-in-time restore of the primary).
  const forks = parseTimelineHistory('1\t0/3000000\tno recovery target specified\n\n2\t0/800cdd8\tat restore point "before"\n', 3);
  const writer = { ...base, currentLsn: '0/9000000', timeline: 3, forks };
  const standby = (timeline: number, replayLsn: string) => ({ ...base, inRecovery: true, timeline, replayLsn, receiverStatus: null });

  it('reads the history file; timeline 1 has none; an unreadable one is unknown', () => {
    expect(forks).toEqual([
      { timeline: 1, switchLsn: '0/3000000' },
      { timeline: 2, switchLsn: '0/800CDD8' },
    ]);
    expect(parseTimelineHistory(null, 1)).toEqual([]);
    expect(parseTimelineHistory(null, 3)).toBeNull();
  });

  it('past the fork on the old timeline: diverged; before it: can follow; same timeline: not diverged', () => {
    expect(divergence(standby(2, '0/A0000A0'), writer)).toMatchObject({
      diverged: true,
      detail: expect.stringContaining('past 0/800CDD8'),
    });
    expect(divergence(standby(2, '0/8000000'), writer)).toMatchObject({ diverged: false });
    expect(divergence(standby(3, '0/9000000'), writer)).toMatchObject({ diverged: false });
    expect(divergence(standby(4, '0/9000000'), writer)).toMatchObject({ diverged: true });
    // A timeline the writer never descended from.
    expect(divergence(standby(5, '0/1000000'), { ...writer, timeline: 6, forks: [{ timeline: 1, switchLsn: '0/3000000' }] })).toMatchObject(
      {
        diverged: true,
      },
    );
    // Without the writer's history nothing is claimed.
    expect(divergence(standby(2, '0/A0000A0'), { ...writer, forks: null })).toBeUndefined();
  });

  it('the report says diverged with no lag figure, never "lag 0"', () => {
    const monitor = new ReplicationMonitor(30);
    const primary = ok(writer);
    monitor.observePrimary(primary);
    const report = monitor.report(primary, ok(standby(2, '0/A0000A0')), now);
    expect(report).toMatchObject({ status: 'degraded', state: 'diverged', lagBytes: null, lagSeconds: null });
    expect(report.diverged).toContain('timeline 2');
  });
});
