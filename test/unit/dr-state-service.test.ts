import { INITIAL_STATE, type DrState } from '../../src/services/dr-state/dr-state.ts';
import { DrStateService } from '../../src/services/dr-state/dr-state-service.ts';
import { AppError } from '../../src/http/app-error.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { MemoryDrStateStore } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

function service(store: MemoryDrStateStore, id = 'i1') {
  return new DrStateService({
    stateStore: store,
    subscribe: () => ({ close: async () => undefined }),
    instanceId: id,
    syncIntervalMs: 60_000,
    metrics: createMetrics(),
    logger: captureLogger().logger,
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
});
