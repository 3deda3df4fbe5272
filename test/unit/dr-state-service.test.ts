import { INITIAL_STATE, type DrState } from '../../src/services/dr-state/dr-state.ts';
import { DrStateService, FENCE_RETRY_MS, type FenceReport } from '../../src/services/dr-state/dr-state-service.ts';
import { AppError } from '../../src/http/app-error.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { MemoryDrStateStore } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

function service(store: MemoryDrStateStore, id = 'i1', opts: { now?: () => number; leaseMs?: number; seedGraceMs?: number } = {}) {
  return new DrStateService({
    stateStore: store,
    subscribe: () => ({ close: async () => undefined }),
    instanceId: id,
    syncIntervalMs: 60_000,
    metrics: createMetrics(),
    logger: captureLogger().logger,
    ...opts,
  });
}

const enableReadOnly = (s: DrState, now: string) => ({
  ...s,
  readOnly: { enabled: true, reason: 'r', since: now, by: 'ops', expiresAt: null },
});

describe('DrStateService', () => {
  it('a change bumps the version by one and is applied locally, with listeners called', async () => {
    const store = new MemoryDrStateStore();
    const dr = service(store);
    const seen: number[] = [];
    dr.onApply((s) => void seen.push(s.version));
    const change = await dr.change(enableReadOnly);
    expect(change.before.version).toBe(0);
    expect(change.after.version).toBe(1);
    expect(dr.current().readOnly.enabled).toBe(true);
    expect(seen).toEqual([1]);
    expect(store.beats.get('i1')?.appliedVersion).toBe(1);
  });

  it('the loser of a race gets 409 and adopts the winner', async () => {
    const store = new MemoryDrStateStore();
    const one = service(store, 'one');
    const two = service(store, 'two');
    await one.change(enableReadOnly);
    // `two` has not synced: its in-memory state is version 0, but change() reads the store first.
    const change = await two.change((s) => s);
    expect(change.after.version).toBe(2);
    const originalCas = store.compareAndSet.bind(store);
    store.compareAndSet = async (expected, next) => {
      store.state = { ...store.state!, version: store.state!.version + 1 };
      return originalCas(expected, next);
    };
    await expect(one.change((s) => s)).rejects.toMatchObject({ status: 409 });
    expect(one.current().version).toBe(3);
  });

  it('while the store is down, keeps the last state and refuses changes with 503', async () => {
    const store = new MemoryDrStateStore();
    const dr = service(store);
    await dr.change(enableReadOnly);
    store.down = true;
    await dr.sync();
    expect(dr.storeAvailable()).toBe(false);
    expect(dr.current().readOnly.enabled).toBe(true);
    const err = await dr.change((s) => s).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).status).toBe(503);
  });

  it('when the store comes back empty, puts back the newest state it holds', async () => {
    const store = new MemoryDrStateStore();
    const dr = service(store);
    await dr.change(enableReadOnly);
    store.state = null;
    await dr.sync();
    expect(store.state).toMatchObject({ version: 1, readOnly: { enabled: true } });
    expect(dr.storeAvailable()).toBe(true);
  });

  it('applies a newer stored state on sync and ignores an older one', async () => {
    const store = new MemoryDrStateStore();
    const dr = service(store);
    store.state = { ...INITIAL_STATE, version: 5 };
    await dr.sync();
    expect(dr.current().version).toBe(5);
    store.state = { ...INITIAL_STATE, version: 3 };
    await dr.sync();
    expect(dr.current().version).toBe(5);
  });

  describe('Redis comes back empty: only a copy known to be current is put back at once', () => {
    const clock = { t: Date.parse('2026-01-01T00:00:00Z') };
    const now = () => clock.t;
    const setup = async () => {
      const store = new MemoryDrStateStore();
      const a = service(store, 'a', { now, leaseMs: 5000, seedGraceMs: 0 });
      const b = service(store, 'b', { now, leaseMs: 5000, seedGraceMs: 0 });
      await a.sync();
      await b.sync();
      await a.sync(); // both saw each other live: peers [a, b]
      await b.sync();
      return { store, a, b };
    };

    it('a stale instance holding an older copy does not put it back; it refuses (state_unknown) until the current copy is back', async () => {
      const { store, a, b } = await setup();
      // b partitioned: it misses read-only mode; its lease runs out.
      const beatB = store.beats.get('b')!;
      clock.t += 6000;
      store.beats.set('b', { ...beatB });
      await a.sync();
      await a.change(enableReadOnly);
      // Redis restarts empty; a is down (its copy is the newest), b returns first.
      store.state = null;
      store.beats.clear();
      await b.sync();
      expect(store.state).toBeNull();
      expect(b.known()).toBe(false);
      expect(b.lost()?.reason).toMatch(/waiting for a/);
      await expect(b.change(enableReadOnly)).rejects.toMatchObject({ status: 503, code: 'state_unknown' });
      // a comes back: its copy is current neither (lease ran out while down), but it is the newest
      // of the candidates and every peer has reported.
      clock.t += 6000;
      await a.sync();
      await b.sync();
      await a.sync();
      expect(store.state).toMatchObject({ readOnly: { enabled: true } });
      await b.sync();
      expect(b.known()).toBe(true);
      expect(b.current().readOnly.enabled).toBe(true);
    });

    it('an instance within its lease puts its copy back at once and keeps taking writes', async () => {
      const { store, a } = await setup();
      await a.change(enableReadOnly);
      const version = a.current().version;
      store.state = null;
      clock.t += 1000;
      await a.sync();
      expect(store.state).toMatchObject({ version });
      expect(a.known()).toBe(true);
      expect(a.leaseExpired()).toBe(false);
    });

    it('two stale instances with different copies racing: the higher version wins, whoever goes first', async () => {
      for (const order of [
        ['a', 'b'],
        ['b', 'a'],
      ]) {
        const { store, a, b } = await setup();
        await a.change(enableReadOnly); // version 1 on both after the next syncs ...
        await b.sync();
        const beatB = store.beats.get('b')!;
        clock.t += 6000;
        store.beats.set('b', { ...beatB, lastSeen: new Date(clock.t - 6000).toISOString() });
        await a.sync();
        await a.change((s, at) => ({ ...s, media: { active: 'backup', since: at, by: 'ops' } })); // ... b misses version 2
        store.state = null;
        store.beats.clear();
        clock.t += 6000; // both stale now
        const byId = { a, b };
        for (let round = 0; round < 3; round += 1) for (const id of order) await byId[id as 'a' | 'b'].sync();
        expect(store.state).toMatchObject({ version: 2, media: { active: 'backup' } });
        expect(a.known() && b.known()).toBe(true);
        expect(b.current().version).toBe(2);
      }
    });

    it('a fresh instance (no copy, never confirmed) seeds the initial state only after the grace, and not while another reports a copy', async () => {
      const store = new MemoryDrStateStore();
      const fresh = service(store, 'f', { now, seedGraceMs: 2000 });
      await fresh.sync();
      expect(fresh.known()).toBe(false);
      clock.t += 2100;
      await fresh.sync();
      expect(fresh.known()).toBe(true);
      expect(store.state).toMatchObject({ version: 0 });

      const other = new MemoryDrStateStore();
      other.beats.set('old', {
        id: 'old',
        appliedVersion: 9,
        lastSeen: new Date(clock.t).toISOString(),
        stateLost: { since: new Date(clock.t).toISOString(), peers: ['old', 'gone'] },
      });
      const second = service(other, 'g', { now, seedGraceMs: 2000 });
      await second.sync();
      clock.t += 2100;
      await second.sync();
      expect(second.known()).toBe(false);
      expect(other.state).toBeNull();
    });

    it('an operator reset (seed) replaces a lost state with a version above every copy reported', async () => {
      const { store, a, b } = await setup();
      await a.change(enableReadOnly);
      store.state = null;
      store.beats.clear();
      clock.t += 6000;
      await b.sync(); // b (copy 0) waits for a, which has not reported yet
      expect(b.known()).toBe(false);
      const reset = (s: DrState, at: string) => ({ ...s, readOnly: { ...INITIAL_STATE.readOnly, reason: 'reset', since: at } });
      const change = await b.change(reset, { seed: true });
      expect(change.after.version).toBeGreaterThan(0);
      expect(b.known()).toBe(true);
      // a (stale, copy version 1 with read-only on) follows the reset, even at the same version.
      await a.sync();
      expect(a.current()).toEqual(change.after);
      expect(a.known()).toBe(true);
    });
  });
});

describe('DrStateService: the database write fence raise that failed on a node', () => {
  afterEach(() => jest.useRealTimers());

  it('is tried again every FENCE_RETRY_MS on the failed nodes only, until they answer; a newer full raise or a stop ends it', async () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const dr = service(new MemoryDrStateStore());
    const calls: { version: number; nodes: string[] | undefined }[] = [];
    let replicaUp = false;
    dr.useWriteFence({
      async raise(version, _by, nodes) {
        calls.push({ version, nodes });
        const report: FenceReport['nodes'] = {};
        for (const n of nodes ?? ['primary', 'replica'])
          report[n] = n === 'replica' && !replicaUp ? { outcome: 'failed', error: 'ECONNREFUSED' } : { outcome: 'raised' };
        const failed = Object.values(report).some((r) => r.outcome === 'failed');
        return { databaseFence: failed ? 'partial' : 'raised', epoch: version, nodes: report, waitedMs: 0 };
      },
      async highest() {
        return null;
      },
    });
    const on = await dr.change(enableReadOnly);
    expect(on.fence).toMatchObject({ databaseFence: 'partial', nodes: { replica: { outcome: 'failed' } } });
    expect(calls).toEqual([{ version: 1, nodes: undefined }]);
    // Down: retried on the replica alone, again and again.
    await jest.advanceTimersByTimeAsync(FENCE_RETRY_MS * 3);
    expect(calls.slice(1)).toEqual(Array.from({ length: 3 }, () => ({ version: 1, nodes: ['replica'] })));
    // Back: raised there, and no more retries.
    replicaUp = true;
    await jest.advanceTimersByTimeAsync(FENCE_RETRY_MS);
    const count = calls.length;
    await jest.advanceTimersByTimeAsync(FENCE_RETRY_MS * 5);
    expect(calls.length).toBe(count);

    // A newer change whose raise reached every node ends an older retry.
    replicaUp = false;
    await dr.change((s) => ({ ...s, readOnly: { ...s.readOnly, enabled: false } }));
    replicaUp = true;
    await dr.change(enableReadOnly);
    const afterFull = calls.length;
    await jest.advanceTimersByTimeAsync(FENCE_RETRY_MS * 3);
    expect(calls.length).toBe(afterFull);

    // A stop ends a retry.
    replicaUp = false;
    await dr.change((s) => ({ ...s, readOnly: { ...s.readOnly, enabled: false } }));
    await dr.stop();
    const stopped = calls.length;
    await jest.advanceTimersByTimeAsync(FENCE_RETRY_MS * 3);
    expect(calls.length).toBe(stopped);
  });
});
