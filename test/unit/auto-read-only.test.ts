import type { DatabaseProbeData } from '../../src/domain.ts';
import { AUTO_ACTOR, AutoReadOnly } from '../../src/services/database/auto-read-only.ts';
import type { ProbeResult } from '../../src/health/probe-runner.ts';
import { eventually } from '../../support/common.ts';
import { drWorld } from '../support/dr-world.ts';

const data = (inRecovery: boolean): DatabaseProbeData => ({
  inRecovery,
  currentLsn: null,
  receiveLsn: null,
  replayLsn: null,
  replayAt: null,
  receiverStatus: null,
  standbys: [],
  systemId: 's',
  timeline: 1,
  fenced: false,
});
const up = (inRecovery = false): ProbeResult<DatabaseProbeData> => ({
  ok: true,
  latencyMs: 1,
  checkedAt: new Date(),
  data: data(inRecovery),
});
const down: ProbeResult<DatabaseProbeData> = {
  ok: false,
  latencyMs: 1000,
  checkedAt: new Date(),
  error: { code: 'timeout', message: 'no answer' },
};
const settle = () => new Promise((r) => setTimeout(r, 20));

function setup(options: { replica?: ProbeResult<DatabaseProbeData> | undefined; primaryCurrent?: () => boolean } = {}) {
  const w = drWorld();
  let replica = 'replica' in options ? options.replica : up(true);
  const make = (id: string) => {
    const parts = w.instance(id);
    const auto = new AutoReadOnly({
      dr: parts.dr,
      audit: parts.audit,
      logger: parts.logger,
      failuresToEngage: 3,
      recoveriesToRelease: 2,
      replica: () => replica,
      primaryCurrent: options.primaryCurrent ?? (() => true),
    });
    return { ...parts, auto };
  };
  return { w, make, setReplica: (r: ProbeResult<DatabaseProbeData> | undefined) => void (replica = r) };
}

const engaged = (w: ReturnType<typeof drWorld>) => w.store.state?.readOnly.by === AUTO_ACTOR && w.store.state.readOnly.enabled;

describe('AutoReadOnly', () => {
  it('engages after N failed primary probes while the replica answers: read-only on, reads from the replica, audited', async () => {
    const { w, make } = setup();
    const a = make('api-1');
    a.auto.observePrimary(down);
    a.auto.observePrimary(down);
    await settle();
    expect(w.store.state).toBeNull();
    a.auto.observePrimary(down);
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    expect(w.store.state).toMatchObject({
      version: 1,
      readOnly: { enabled: true, by: AUTO_ACTOR },
      database: { active: 'replica', by: AUTO_ACTOR },
    });
    expect(w.store.state?.readOnly.reason).toContain('failed 3 probes');
    await eventually(
      async () => w.sink.rows.size,
      (n) => n === 1,
      1000,
    );
    expect([...w.sink.rows.values()][0]).toMatchObject({ actor: AUTO_ACTOR, action: 'auto_read_only.engage', result: 'success' });
  });

  it('a good probe in between starts the count again; a standby answering as primary counts as a failure', async () => {
    const { w, make } = setup();
    const a = make('api-1');
    for (const r of [down, down, up(), down, down]) a.auto.observePrimary(r);
    await settle();
    expect(w.store.state).toBeNull();
    a.auto.observePrimary(up(true));
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
  });

  it('does nothing while the replica does not answer either, or when read-only mode is already on', async () => {
    const { w, make, setReplica } = setup({ replica: down });
    const a = make('api-1');
    for (let i = 0; i < 5; i += 1) a.auto.observePrimary(down);
    await settle();
    expect(w.store.state).toBeNull();
    setReplica(undefined);
    a.auto.observePrimary(down);
    await settle();
    expect(w.store.state).toBeNull();
    // An operator's read-only mode: left alone.
    setReplica(up(true));
    await a.dr.change((s, now) => ({ ...s, readOnly: { enabled: true, reason: 'ops', since: now, by: 'ops', expiresAt: null } }));
    a.auto.observePrimary(down);
    await settle();
    expect(w.store.state).toMatchObject({ version: 1, readOnly: { by: 'ops' }, database: { active: 'primary' } });
  });

  it('releases its own mode after M good probes, switching reads back; never an operator-changed one', async () => {
    const { w, make } = setup();
    const a = make('api-1');
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(down);
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    a.auto.observePrimary(up());
    await settle();
    expect(engaged(w)).toBe(true);
    a.auto.observePrimary(up());
    await eventually(
      async () => w.store.state,
      (s) => s?.readOnly.enabled === false,
      1000,
    );
    expect(w.store.state).toMatchObject({ version: 2, readOnly: { by: AUTO_ACTOR }, database: { active: 'primary', by: AUTO_ACTOR } });

    // Engaged again, then an operator takes over read-only mode: the automation leaves it.
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(down);
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    await a.dr.change((s, now) => ({ ...s, readOnly: { ...s.readOnly, reason: 'ops keep it', by: 'ops', since: now } }));
    for (let i = 0; i < 4; i += 1) a.auto.observePrimary(up());
    await settle();
    expect(w.store.state).toMatchObject({ version: 4, readOnly: { enabled: true, by: 'ops' }, database: { active: 'replica' } });
  });

  it('never switches back after a promotion, nor to a primary that is not current (older timeline or fenced)', async () => {
    let current = false;
    const { w, make, setReplica } = setup({ primaryCurrent: () => current });
    const a = make('api-1');
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(down);
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(up());
    await settle();
    expect(engaged(w)).toBe(true);
    // The replica was promoted meanwhile (seen out of recovery): still no switch back.
    current = true;
    setReplica(up(false));
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(up());
    await settle();
    expect(w.store.state).toMatchObject({ version: 1, database: { active: 'replica' } });
  });

  it('a promotion recorded before it engaged (an earlier failover, since failed back) does not keep its mode on; one recorded since does', async () => {
    const { w, make } = setup();
    const a = make('api-1');
    // An earlier failover and failback left promotedAt in the state.
    await a.dr.change((st) => ({ ...st, database: { ...st.database, promotedAt: new Date(Date.now() - 60_000).toISOString() } }));
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(down);
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    for (let i = 0; i < 2; i += 1) a.auto.observePrimary(up());
    await eventually(
      async () => w.store.state,
      (st) => st?.readOnly.enabled === false && st.database.active === 'primary',
      1000,
    );
    // Engaged again, then a promotion is recorded: the mode stays on.
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(down);
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    await new Promise((r) => setTimeout(r, 5));
    await a.dr.change((st) => ({ ...st, database: { ...st.database, promotedAt: new Date().toISOString() } }));
    for (let i = 0; i < 3; i += 1) a.auto.observePrimary(up());
    await settle();
    expect(engaged(w)).toBe(true);
  });

  it('two instances seeing the same outage make one change and one audit record; Redis down makes none and throws nothing', async () => {
    const { w, make } = setup();
    const a = make('api-1');
    const b = make('api-2');
    for (let i = 0; i < 3; i += 1) {
      a.auto.observePrimary(down);
      b.auto.observePrimary(down);
    }
    await eventually(
      async () => w.store.state,
      () => engaged(w),
      1000,
    );
    await settle();
    expect(w.store.state?.version).toBe(1);
    expect([...w.sink.rows.values()].filter((e) => e.action === 'auto_read_only.engage')).toHaveLength(1);

    const { w: w2, make: make2 } = setup();
    const c = make2('api-3');
    w2.store.down = true;
    for (let i = 0; i < 4; i += 1) c.auto.observePrimary(down);
    await settle();
    expect(c.log()).toContain('automatic read-only change not made');
    w2.store.down = false;
    expect(w2.store.state).toBeNull();
    // The next failed probe after Redis returns engages it.
    c.auto.observePrimary(down);
    await eventually(
      async () => w2.store.state,
      () => engaged(w2),
      1000,
    );
  });
});
