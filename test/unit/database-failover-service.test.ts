import type { DatabaseProbeData, DatabaseTarget } from '../../src/domain.ts';
import { DATABASE_LOCK, DatabaseFailoverService } from '../../src/services/database/database-failover-service.ts';
import { ReplicationMonitor } from '../../src/services/database/replication-monitor.ts';
import { ProbeRunner } from '../../src/health/probe-runner.ts';
import { ConflictError, DependencyUnavailableError, PreconditionFailedError } from '../../src/http/app-error.ts';
import { freePort } from '../../support/common.ts';
import { drWorld } from '../support/dr-world.ts';

const node = (over: Partial<DatabaseProbeData>): DatabaseProbeData => ({
  inRecovery: false,
  currentLsn: '0/3000000',
  receiveLsn: null,
  replayLsn: null,
  replayAt: null,
  receiverStatus: null,
  standbys: [],
  systemId: 'sys-1',
  timeline: 1,
  fenced: false,
  ...over,
});
const primaryWriting = () => node({ standbys: [{ state: 'streaming', replayLsn: '0/3000000', replayLagSeconds: 0 }] });
const standby = (over: Partial<DatabaseProbeData> = {}) =>
  node({ inRecovery: true, currentLsn: null, receiveLsn: '0/3000000', replayLsn: '0/3000000', receiverStatus: 'streaming', ...over });

async function rejection(promise: Promise<unknown>): Promise<Error & { extra?: Record<string, unknown> }> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );
}

/**
 * A failover service over fakes: probes answer what `probes` says (a value, or an Error for a node
 * that does not answer); the connection URLs point at a port nothing listens on, so any SQL the
 * service sends outside its probes fails fast (the paths tested here send none, or tolerate it).
 */
async function setup(options: { replica?: boolean; readOnly?: boolean } = {}) {
  const w = drWorld();
  const parts = w.instance('api-1');
  const dead = `postgresql://postgres@127.0.0.1:${await freePort()}/none`;
  const probes: Record<DatabaseTarget, DatabaseProbeData | Error> = { primary: primaryWriting(), replica: standby() };
  const runner = (target: DatabaseTarget) =>
    new ProbeRunner<DatabaseProbeData>(
      async () => {
        const p = probes[target];
        if (p instanceof Error) throw p;
        return p;
      },
      { dependency: 'database', target: () => target, timeoutMs: 200, metrics: parts.metrics, logger: parts.logger },
    );
  const targets: DatabaseTarget[] = options.replica === false ? ['primary'] : ['primary', 'replica'];
  const runners = new Map(targets.map((t) => [t, runner(t)]));
  const identities = new Map<DatabaseTarget, { systemId: string; timeline: number; recordedAt: string }>();
  let newest: number | null = null;
  let readOnly = options.readOnly ?? false;
  const monitor = new ReplicationMonitor(30, () => parts.dr.current().database.active);
  // The monitor learns the writer's position from the probes, as the service's background probes do.
  const observe = async () => {
    for (const [t, r] of runners) monitor.observe(t, await r.run());
  };
  await observe();
  const failover = new DatabaseFailoverService({
    clients: { url: (t) => (targets.includes(t) ? dead : undefined) },
    runners,
    monitor,
    watch: { identity: (t) => identities.get(t) ?? null, newestTimeline: () => newest, abandoned: () => false },
    dr: parts.dr,
    locks: parts.locks,
    readOnlyActive: () => readOnly,
    metrics: parts.metrics,
    logger: parts.logger,
    instanceId: 'api-1',
    maxLagSeconds: 30,
  });
  const counted = async (kind: string, result: string) =>
    (await parts.metrics.failoverTotal.get()).values.find((v) => v.labels.kind === kind && v.labels.result === result)?.value ?? 0;
  return {
    w,
    parts,
    probes,
    failover,
    identities,
    counted,
    observe,
    setNewest: (n: number) => void (newest = n),
    setReadOnly: (on: boolean) => void (readOnly = on),
    /** Read-only mode on in the stored state too, as a switch onto a standby re-checks it there. */
    storeReadOnly: () =>
      parts.dr.change((st, now) => ({ ...st, readOnly: { enabled: true, reason: 'test', since: now, by: 'ops', expiresAt: null } })),
  };
}

const failedChecks = (err: { extra?: Record<string, unknown> }) =>
  (err.extra?.checks as { name: string; ok: boolean }[]).filter((c) => !c.ok).map((c) => c.name);

describe('DatabaseFailoverService: promote', () => {
  it('is refused (412) without a replica configured', async () => {
    const s = await setup({ replica: false });
    const err = await rejection(s.failover.promote({ dryRun: false }));
    expect(err).toBeInstanceOf(PreconditionFailedError);
    expect(failedChecks(err)).toEqual(['replica_configured']);
    expect(await s.counted('promote', 'refused')).toBe(1);
  });

  it('is refused while the primary still takes writes and read-only mode is off; a dry run says so without refusing', async () => {
    const s = await setup();
    const dry = await s.failover.promote({ dryRun: true });
    expect(dry).toMatchObject({ promoted: false, dryRun: true, wouldPromote: false, node: 'replica' });
    const err = await rejection(s.failover.promote({ dryRun: false }));
    expect(failedChecks(err)).toEqual(['primary_writes_stopped']);
    expect(err.message).toContain('turn read-only mode on first');
    s.setReadOnly(true);
    expect(await s.failover.promote({ dryRun: true })).toMatchObject({ wouldPromote: true });
    expect(s.w.store.state).toBeNull();
  });

  it('is refused while the primary does not answer here and read-only mode is off: another instance may still write to it (a partition)', async () => {
    const s = await setup();
    s.probes.primary = new Error('connect ECONNREFUSED 127.0.0.1:5432');
    await s.observe();
    const err = await rejection(s.failover.promote({ dryRun: false }));
    expect(failedChecks(err)).toEqual(['primary_writes_stopped']);
    expect(err.message).toContain('another instance may still reach it');
    s.setReadOnly(true);
    expect(await s.failover.promote({ dryRun: true })).toMatchObject({ wouldPromote: true });
  });

  it('is refused when the standby does not answer, or lags beyond the bound', async () => {
    const s = await setup({ readOnly: true });
    s.probes.replica = new Error('connect ECONNREFUSED 127.0.0.1:5433');
    const err = await rejection(s.failover.promote({ dryRun: false }));
    expect(failedChecks(err)).toEqual(['replica_reachable']);

    s.probes.replica = standby({ replayLsn: '0/1000000' });
    s.probes.primary = node({ standbys: [{ state: 'streaming', replayLsn: '0/1000000', replayLagSeconds: 120 }] });
    await s.observe();
    const lagging = await rejection(s.failover.promote({ dryRun: false }));
    expect(failedChecks(lagging)).toEqual(['lag_within_bound']);
    // A larger bound given with the request lets the checks pass (dry run: nothing runs).
    expect(await s.failover.promote({ dryRun: true, maxLagSeconds: 300 })).toMatchObject({ wouldPromote: true });
    expect(await s.counted('promote', 'refused')).toBe(2);
  });

  it('answers alreadyPromoted, changing nothing, when the replica is out of recovery', async () => {
    const s = await setup();
    s.probes.replica = node({ timeline: 2 });
    s.probes.primary = new Error('connect ECONNREFUSED');
    const answer = await s.failover.promote({ dryRun: false });
    expect(answer).toMatchObject({ promoted: false, alreadyPromoted: true });
    expect(s.w.store.state).toBeNull();
  });

  it('409 naming the holder while another database operation holds the lock', async () => {
    const s = await setup({ readOnly: true });
    await s.w.instance('api-2').locks.acquire(DATABASE_LOCK, 'switchover', { ttlMs: 60_000, busyMessage: 'busy' });
    const err = await rejection(s.failover.promote({ dryRun: false }));
    expect(err).toBeInstanceOf(ConflictError);
    expect(err.extra).toMatchObject({ lock: 'database', holder: expect.stringMatching(/^api-2:switchover:/) });
    expect(await s.failover.lockHolder()).toMatch(/^api-2:switchover:/);
  });
});

describe('DatabaseFailoverService: switch', () => {
  it('refuses (412) an unconfigured, unreachable, fenced or older-timeline target, and a standby while read-only mode is off', async () => {
    const only = await setup({ replica: false });
    expect(failedChecks(await rejection(only.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops')))).toEqual([
      'target_configured',
    ]);

    const s = await setup();
    expect(failedChecks(await rejection(s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops')))).toEqual([
      'read_only_for_standby',
    ]);
    s.probes.replica = new Error('timeout');
    expect(failedChecks(await rejection(s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops')))).toEqual(['target_reachable']);
    s.probes.replica = node({ timeline: 1, fenced: true });
    s.setNewest(2);
    expect(failedChecks(await rejection(s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops')))).toEqual([
      'newest_timeline',
      'not_fenced',
    ]);
    expect(s.w.store.state).toBeNull();
    expect(await s.counted('database_switch', 'refused')).toBe(3);
  });

  it('switches to the standby while read-only mode is on: recorded in the DR state, lock released; a second switch is a no-op', async () => {
    const s = await setup({ readOnly: true });
    await s.storeReadOnly();
    const before = structuredClone(s.w.store.state);
    expect(await s.failover.switchDatabase({ to: 'replica', dryRun: true }, 'ops')).toMatchObject({ wouldSwitch: true, changed: false });
    expect(s.w.store.state).toEqual(before);
    const answer = await s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops');
    expect(answer).toMatchObject({ changed: true, from: 'primary', to: 'replica', inRecovery: true });
    // The restore point on the old target could not be made (nothing listens): said, not fatal.
    expect(answer).toHaveProperty('restorePoint.error');
    expect(s.w.store.state?.database).toMatchObject({ active: 'replica', by: 'ops' });
    expect(s.w.lockStore.locks.size).toBe(0);
    expect(await s.counted('database_switch', 'success')).toBe(1);
    expect(await s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops')).toMatchObject({ changed: false });
  });

  it('a lift stored after the switch onto a standby was checked refuses it (412), nothing switched', async () => {
    const s = await setup({ readOnly: true });
    // This instance still sees read-only on; the stored state (another instance's lift) has it off.
    const err = await rejection(s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops'));
    expect(err).toBeInstanceOf(PreconditionFailedError);
    expect(failedChecks(err)).toEqual(['read_only_for_standby']);
    expect(s.w.store.state?.database.active ?? 'primary').toBe('primary');
    expect(s.w.lockStore.locks.size).toBe(0);
  });

  it('with Redis down the switch is refused (503) and the lock is released', async () => {
    const s = await setup({ readOnly: true });
    s.w.store.down = true;
    const err = await rejection(s.failover.switchDatabase({ to: 'replica', dryRun: false }, 'ops'));
    expect(err).toBeInstanceOf(DependencyUnavailableError);
    expect(s.w.lockStore.locks.size).toBe(0);
  });
});
