import type { DatabaseProbeData } from '../../src/database/pg-probe.ts';
import { ReplicationMonitor } from '../../src/database/replication-monitor.ts';
import type { ProbeResult } from '../../src/health/probe-runner.ts';

const now = Date.parse('2026-11-25T12:00:00Z');
const base: DatabaseProbeData = { inRecovery: false, currentLsn: null, receiveLsn: null, replayLsn: null, replayAt: null, receiverStatus: null, standbys: [], systemId: null, timeline: null, fenced: false };
const ok = (data: Partial<DatabaseProbeData>): ProbeResult<DatabaseProbeData> => ({ ok: true, latencyMs: 1, checkedAt: new Date(now), data: { ...base, ...data } });
const down: ProbeResult<DatabaseProbeData> = { ok: false, latencyMs: 1, checkedAt: new Date(now), error: { code: 'connection_refused', message: 'x' } };

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
    expect(monitor.report(down, replica, now)).toMatchObject({ status: 'degraded', state: 'disconnected', lagSeconds: 12, lagBytes: 256, primaryLastKnownLsn: '0/3000200' });
  });

  it('says promoted or unreachable when that is what the replica is', () => {
    const monitor = new ReplicationMonitor(30);
    expect(monitor.report(undefined, ok({ inRecovery: false, currentLsn: '0/5000000' }), now)).toMatchObject({ state: 'promoted', status: 'healthy' });
    expect(monitor.report(undefined, down, now)).toMatchObject({ state: 'unreachable', status: 'degraded' });
  });
});
