import type { AuditLog } from '../../src/services/audit/audit-log.ts';
import type { AuditEvent } from '../../src/services/audit/audit-event.ts';
import { INITIAL_STATE, type DrState } from '../../src/services/dr-state/dr-state.ts';
import type { DrStateFile } from '../../src/services/dr-state/dr-state-file.ts';
import { DrStateService } from '../../src/services/dr-state/dr-state-service.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { ReadOnlyService } from '../../src/services/read-only/read-only-service.ts';
import { MemoryDrStateStore } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

const clock = { t: Date.parse('2026-01-01T00:00:00Z') };
const now = () => clock.t;

function memoryFile(initial: DrState | null = null): DrStateFile & { saved: DrState | null } {
  return {
    path: '/nonexistent/test',
    saved: initial,
    read() {
      return this.saved;
    },
    write(state) {
      this.saved = state;
    },
  };
}

function drService(store: MemoryDrStateStore, opts: { id?: string; leaseMs?: number; file?: DrStateFile; clock?: () => number } = {}) {
  return new DrStateService({
    stateStore: store,
    subscribe: () => ({ close: async () => undefined }),
    instanceId: opts.id ?? 'i1',
    syncIntervalMs: 60_000,
    metrics: createMetrics(),
    logger: captureLogger().logger,
    leaseMs: opts.leaseMs ?? 5000,
    // A fresh instance on an empty store seeds the initial state at once (no other instance to wait for).
    seedGraceMs: 0,
    file: opts.file,
    now: opts.clock,
  });
}

function readOnlyService(dr: DrStateService, liftBlockedBy: () => string | null, clockFn = now) {
  const events: AuditEvent[] = [];
  const audit = { record: async (e: AuditEvent) => void events.push(e) } as unknown as AuditLog;
  const service = new ReadOnlyService({ dr, audit, metrics: createMetrics(), logger: captureLogger().logger, liftBlockedBy, now: clockFn });
  return { service, events };
}

afterEach(() => {
  clock.t = Date.parse('2026-01-01T00:00:00Z');
});

describe('the lease: an instance that cannot confirm the DR state stops acknowledging writes', () => {
  it('expires once the state was last confirmed longer ago than the lease, and runs again on the next confirmation', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { clock: now });
    expect(dr.leaseExpired()).toBe(true); // never confirmed
    await dr.sync();
    expect(dr.leaseExpired()).toBe(false);
    store.down = true;
    clock.t += 4000;
    await dr.sync();
    expect(dr.leaseExpired()).toBe(false); // within the lease, though Redis is down
    clock.t += 1001;
    await dr.sync();
    expect(dr.leaseExpired()).toBe(true);
    store.down = false;
    await dr.sync();
    expect(dr.leaseExpired()).toBe(false);
    await dr.stop();
  });

  it('a failed heartbeat does not confirm: the heartbeat is never older than the confirmation', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { clock: now });
    await dr.sync();
    store.heartbeat = async () => {
      throw new Error('READONLY replica');
    };
    clock.t += 6000;
    await dr.sync();
    expect(dr.leaseExpired()).toBe(true);
    await dr.stop();
  });

  it('started from the state file (Redis down) the lease has not run: writes wait for Redis', async () => {
    const store = new MemoryDrStateStore();
    store.down = true;
    const file = memoryFile({ ...INITIAL_STATE, version: 7 });
    const dr = drService(store, { file, clock: now });
    await dr.start();
    expect(dr.stateSource()).toBe('file');
    expect(dr.current().version).toBe(7);
    expect(dr.leaseExpired()).toBe(true);
    store.down = false;
    await dr.sync();
    expect(dr.leaseExpired()).toBe(false);
    await dr.stop();
  });

  it('calls the lease-lost listeners once when the lease runs out', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { leaseMs: 60 });
    let lost = 0;
    dr.onLeaseLost(() => void (lost += 1));
    await dr.sync();
    store.down = true;
    // Real timers: on a loaded machine the 60 ms lease timer may fire late, so wait for it (bounded).
    for (const deadline = Date.now() + 5000; lost === 0 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 10));
    expect(lost).toBe(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(lost).toBe(1); // once
    await dr.stop();
  });
});

describe('waiting for instances to apply a version', () => {
  it('does not answer complete while a live instance has not applied it, and names it; a stale one is listed, not waited for', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { leaseMs: 5000 });
    const change = await dr.change((s) => s);
    const t = Date.now();
    store.beats.set('live', { id: 'live', appliedVersion: 0, lastSeen: new Date(t).toISOString() });
    store.beats.set('gone', { id: 'gone', appliedVersion: 0, lastSeen: new Date(t - 7000).toISOString() });
    const p = await dr.waitForInstances(change.after.version, 150);
    expect(p.complete).toBe(false);
    expect(p.notApplied).toEqual(['live']);
    expect(p.stale.map((i) => i.id)).toEqual(['gone']);
    expect(p.applied).toBe(1);
    await dr.stop();
  });

  it('with the default bound, an instance that stops heartbeating is waited for only until its lease ran out', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { leaseMs: 200 });
    const change = await dr.change((s) => s);
    store.beats.set('partitioned', { id: 'partitioned', appliedVersion: 0, lastSeen: new Date().toISOString() });
    const p = await dr.waitForInstances(change.after.version);
    expect(p.complete).toBe(true);
    expect(p.notApplied).toEqual([]);
    expect(p.stale.map((i) => i.id)).toEqual(['partitioned']);
    // Waited for its heartbeat to age past lease + skew allowance (1.2 s), not less.
    expect(p.waitedMs).toBeGreaterThanOrEqual(1100);
    await dr.stop();
  });

  it('an instance that stopped (after draining) is not waited for', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store);
    const other = drService(store, { id: 'i2' });
    await other.sync();
    await other.stop();
    const change = await dr.change((s) => s);
    const p = await dr.waitForInstances(change.after.version, 3000);
    expect(p).toMatchObject({ complete: true, applied: 1, total: 1 });
    expect(p.waitedMs).toBeLessThan(1000);
    await dr.stop();
  });

  it('answers at once when every live instance applied it', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store);
    const other = drService(store, { id: 'i2' });
    const change = await dr.change((s) => s);
    await other.sync();
    const p = await dr.waitForInstances(change.after.version);
    expect(p).toMatchObject({ complete: true, applied: 2, total: 2, notApplied: [], stale: [] });
    await dr.stop();
    await other.stop();
  });
});

describe('read-only TTL expiry never lifts the mode into an unsafe or unrecorded state', () => {
  const ttlState =
    (expiresAt: number): ((s: DrState, n: string) => Omit<DrState, 'version' | 'updatedAt'>) =>
    (s, n) => ({
      ...s,
      readOnly: { enabled: true, reason: 'incident', since: n, by: 'ops', expiresAt: new Date(expiresAt).toISOString() },
    });

  it('Redis down at expiry: the mode stays on, says why, is audited once, and lifts once Redis answers', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { clock: now });
    const { service, events } = readOnlyService(dr, () => null);
    await dr.change(ttlState(clock.t + 1000));
    service.stop();
    store.down = true;
    clock.t += 2000;
    await service.checkExpiry();
    await service.checkExpiry();
    await service.checkExpiry();
    service.stop();
    expect(service.isActive()).toBe(true);
    expect(service.expiryRefused()).toMatchObject({ kind: 'unrecorded', reason: expect.stringMatching(/Redis/) });
    expect(service.status()).toMatchObject({ active: true, ttlExpiryRefused: { kind: 'unrecorded' } });
    expect(events.filter((e) => e.action === 'read_only.expire')).toHaveLength(1);
    expect(events[0]).toMatchObject({ result: 'refused', actor: 'system:ttl' });
    store.down = false;
    await service.checkExpiry();
    service.stop();
    expect(service.isActive()).toBe(false);
    expect(service.expiryRefused()).toBeNull();
    expect(store.state!.readOnly).toMatchObject({ enabled: false, by: 'system:ttl' });
    expect(events.map((e) => e.result)).toEqual(['refused', 'success']);
    await dr.stop();
  });

  it('active target not verified writable: the refusal is recorded in the shared state (ttlExpiryRefused) and audited once', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { clock: now });
    const other = drService(store, { id: 'i2', clock: now });
    const one = readOnlyService(dr, () => 'the active database target (replica) is a standby');
    const two = readOnlyService(other, () => 'the active database target (replica) is a standby');
    await dr.change(ttlState(clock.t + 1000));
    await other.sync();
    clock.t += 2000;
    await Promise.all([one.service.checkExpiry(), two.service.checkExpiry()]);
    await other.sync();
    for (const s of [one.service, two.service]) {
      s.stop();
      expect(s.isActive()).toBe(true);
      expect(s.status()).toMatchObject({
        enabled: true,
        expiresAt: null,
        ttlExpiryRefused: { kind: 'unsafe', reason: expect.stringMatching(/standby/) },
      });
    }
    expect(store.state!.readOnly.ttlExpiryRefused).toMatchObject({ reason: expect.stringMatching(/standby/) });
    expect([...one.events, ...two.events].filter((e) => e.action === 'read_only.expire')).toHaveLength(1);
    await dr.stop();
    await other.stop();
  });

  it('a switch to a standby between the writability check and the record: the expiry is judged again, on the new target', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { clock: now });
    let calls = 0;
    const { service, events } = readOnlyService(dr, () => {
      calls += 1;
      if (calls === 1) {
        // The primary was fine when checked; meanwhile an operator switched to the standby.
        store.state = { ...store.state!, version: store.state!.version + 1, database: { ...store.state!.database, active: 'replica' } };
        return null;
      }
      return dr.current().database.active === 'replica' ? 'the active database target (replica) is a standby' : null;
    });
    await dr.change(ttlState(clock.t + 1000));
    clock.t += 2000;
    service.stop();
    await service.checkExpiry();
    // The judgement again runs on a 100 ms timer: wait for it (bounded; late on a loaded machine).
    for (const deadline = Date.now() + 5000; calls < 2 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    service.stop();
    expect(calls).toBe(2);
    expect(service.isActive()).toBe(true);
    expect(store.state!.readOnly).toMatchObject({ enabled: true, ttlExpiryRefused: { reason: expect.stringMatching(/standby/) } });
    expect(events.map((e) => e.result)).toEqual(['refused']);
    await dr.stop();
  });

  it('restarted from the state file with an expired TTL while Redis is down: read-only stays on', async () => {
    const expired: DrState = {
      ...INITIAL_STATE,
      version: 4,
      readOnly: { enabled: true, reason: 'incident', since: null, by: 'ops', expiresAt: new Date(clock.t - 60_000).toISOString() },
    };
    const store = new MemoryDrStateStore();
    store.down = true;
    const dr = drService(store, { file: memoryFile(expired), clock: now });
    const { service, events } = readOnlyService(dr, () => null);
    await dr.start();
    await service.checkExpiry();
    service.stop();
    expect(service.isActive()).toBe(true);
    expect(service.expiryRefused()).toMatchObject({ kind: 'unrecorded' });
    expect(events).toHaveLength(1);
    await dr.stop();
  });

  it('Redis coming back empty gets the mode back (still on), and the expiry is then recorded', async () => {
    const store = new MemoryDrStateStore();
    const dr = drService(store, { clock: now });
    const { service } = readOnlyService(dr, () => null);
    await dr.change(ttlState(clock.t + 1000));
    service.stop();
    store.state = null;
    clock.t += 2000;
    await dr.sync();
    expect(store.state).toMatchObject({ readOnly: { enabled: true } });
    expect(service.isActive()).toBe(true);
    await service.checkExpiry();
    service.stop();
    expect(service.isActive()).toBe(false);
    await dr.stop();
  });

  it('random orders of Redis up/down, target safe/unsafe and expiry checks: the mode is never off while unsafe, and off only once recorded', async () => {
    for (let round = 0; round < 40; round += 1) {
      clock.t = Date.parse('2026-01-01T00:00:00Z');
      const store = new MemoryDrStateStore();
      const dr = drService(store, { clock: now });
      let unsafe = false;
      const { service, events } = readOnlyService(dr, () => (unsafe ? 'standby' : null));
      await dr.change(ttlState(clock.t + 500));
      service.stop();
      clock.t += 1000;
      for (let step = 0; step < 8; step += 1) {
        const r = Math.random();
        if (r < 0.3) store.down = !store.down;
        else if (r < 0.5) unsafe = !unsafe;
        else if (r < 0.6 && !store.down) store.state = null;
        else {
          const wasUnsafe = unsafe;
          const wasActive = service.isActive();
          await service.checkExpiry();
          service.stop();
          if (wasActive && !service.isActive()) {
            expect(wasUnsafe).toBe(false);
            expect(store.state?.readOnly.enabled).toBe(false);
          }
        }
        if (!store.down) await dr.sync();
        if (!service.isActive()) expect(store.state?.readOnly.enabled).toBe(false);
      }
      // Each (expiry, kind) refusal is audited at most once.
      const refused = events
        .filter((e) => e.result === 'refused')
        .map((e) => JSON.stringify((e.detail as { kind?: string }).kind ?? 'recorded'));
      expect(new Set(refused).size).toBe(refused.length);
      await dr.stop();
    }
  });
});
