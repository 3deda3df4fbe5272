import { DependencyUnavailableError } from '../../src/http/app-error.ts';
import { ReadOnlyService } from '../../src/services/read-only/read-only-service.ts';
import { eventually } from '../../support/common.ts';
import { drWorld } from '../support/dr-world.ts';

async function gauge(metrics: ReturnType<ReturnType<typeof drWorld>['instance']>['metrics']): Promise<number> {
  return (await metrics.readOnlyMode.get()).values[0]?.value ?? -1;
}

describe('ReadOnlyService', () => {
  let clock = Date.parse('2026-11-26T10:00:00Z');
  const now = () => clock;
  const services: ReadOnlyService[] = [];
  afterEach(() => services.splice(0).forEach((s) => s.stop()));

  function instance(w: ReturnType<typeof drWorld>, id: string, liftBlockedBy?: () => string | null) {
    const parts = w.instance(id);
    const readOnly = new ReadOnlyService({
      dr: parts.dr,
      audit: parts.audit,
      metrics: parts.metrics,
      logger: parts.logger,
      liftBlockedBy,
      now,
    });
    services.push(readOnly);
    return { ...parts, readOnly };
  }

  beforeEach(() => {
    clock = Date.parse('2026-11-26T10:00:00Z');
  });

  it('turns on and off for every instance through the shared state, keeping `since` while it stays on', async () => {
    const w = drWorld({ now });
    const a = instance(w, 'api-1');
    const b = instance(w, 'api-2');
    const on = await a.readOnly.set({ enabled: true, reason: 'maintenance' }, 'ops');
    expect(on.after.readOnly).toMatchObject({ enabled: true, reason: 'maintenance', by: 'ops', expiresAt: null });
    expect(a.readOnly.isActive()).toBe(true);
    expect(await gauge(a.metrics)).toBe(1);
    expect(a.readOnly.retryAfterSeconds()).toBe(30);
    await b.dr.sync();
    expect(b.readOnly.isActive()).toBe(true);
    expect(b.readOnly.reason()).toBe('maintenance');
    clock += 5000;
    const again = await b.readOnly.set({ enabled: true, reason: 'still maintenance' }, 'ops2');
    expect(again.after.readOnly.since).toBe(on.after.readOnly.since);
    const off = await a.readOnly.set({ enabled: false, reason: 'done' }, 'ops');
    expect(off.after.readOnly).toMatchObject({ enabled: false, reason: 'done' });
    expect(a.readOnly.isActive()).toBe(false);
    expect(await gauge(a.metrics)).toBe(0);
    expect(a.readOnly.status()).toMatchObject({ active: false, version: 3 });
  });

  it('with Redis down a change is refused with 503 and nothing changes', async () => {
    const w = drWorld({ now });
    const a = instance(w, 'api-1');
    w.store.down = true;
    await expect(a.readOnly.set({ enabled: true, reason: 'x' }, 'ops')).rejects.toBeInstanceOf(DependencyUnavailableError);
    expect(a.readOnly.isActive()).toBe(false);
    w.store.down = false;
    expect(w.store.state).toBeNull();
  });

  it('a TTL ends the mode at its expiry on every instance; exactly one records and audits it', async () => {
    const w = drWorld({ now });
    const a = instance(w, 'api-1');
    const b = instance(w, 'api-2');
    await a.readOnly.set({ enabled: true, reason: 'deploy', ttlSeconds: 1 }, 'ops');
    await b.dr.sync();
    expect(b.readOnly.retryAfterSeconds()).toBe(1);
    // A passed TTL does not lift the mode by itself: only an expiry recorded in the shared state does.
    clock += 1000;
    expect(a.readOnly.isActive()).toBe(true);
    expect(b.readOnly.isActive()).toBe(true);
    // Both timers fire (real time: 1 s); the compare-and-set lets one record it.
    const state = await eventually(
      async () => w.store.state,
      (s) => s?.readOnly.enabled === false,
      3000,
    );
    expect(state?.readOnly).toMatchObject({ enabled: false, by: 'system:ttl', reason: 'expired: deploy' });
    await a.dr.sync();
    await b.dr.sync();
    expect(a.readOnly.isActive()).toBe(false);
    expect(b.readOnly.isActive()).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    const expiries = [...w.sink.rows.values()].filter((e) => e.action === 'read_only.expire');
    expect(expiries).toHaveLength(1);
    expect(expiries[0]?.result).toBe('success');
    expect(w.store.state?.version).toBe(2);
  });

  it('a TTL never lifts the mode while writes could not work: it stays on, says why, and the refusal is audited', async () => {
    const w = drWorld({ now });
    const a = instance(w, 'api-1', () => 'the active database target is a standby');
    await a.readOnly.set({ enabled: true, reason: 'failover', ttlSeconds: 1 }, 'ops');
    clock += 1000;
    const state = await eventually(
      async () => w.store.state,
      (s) => s?.readOnly.by === 'system:ttl',
      3000,
    );
    expect(state?.readOnly).toMatchObject({
      enabled: true,
      expiresAt: null,
      reason: 'kept on at TTL expiry: the active database target is a standby (was: failover)',
    });
    expect(a.readOnly.isActive()).toBe(true);
    expect([...w.sink.rows.values()].find((e) => e.action === 'read_only.expire')?.result).toBe('refused');
  });

  it('an expiry that cannot be recorded (Redis down) keeps the mode on and is tried again until it is', async () => {
    const w = drWorld({ now });
    const a = instance(w, 'api-1');
    await a.readOnly.set({ enabled: true, reason: 'deploy', ttlSeconds: 1 }, 'ops');
    w.store.down = true;
    clock += 1000;
    // The expiry timer fires about 1 s later (bounded wait: late on a loaded machine).
    await eventually(
      async () => a.readOnly.expiryRefused(),
      (r) => r !== null && r !== undefined,
      5000,
    );
    // Not recorded, not lifted: the mode stays on and says why.
    expect(a.readOnly.isActive()).toBe(true);
    expect(a.readOnly.expiryRefused()?.kind).toBe('unrecorded');
    expect(w.store.state?.readOnly.enabled).toBe(true);
    expect(a.log()).toContain('the expiry did not take effect');
    w.store.down = false;
    const state = await eventually(
      async () => w.store.state,
      (s) => s?.readOnly.enabled === false,
      3000,
    );
    expect(state?.readOnly.by).toBe('system:ttl');
  });
});
