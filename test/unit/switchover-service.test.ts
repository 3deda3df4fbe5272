import type { DatabaseTarget } from '../../src/domain.ts';
import { INITIAL_STATE, type DrState } from '../../src/dr-state/dr-state.ts';
import { lsnGap } from '../../src/database/lsn.ts';
import type { NodeFacts } from '../../src/database/sql-nodes.ts';
import { SwitchoverFailedError, SwitchoverService, type StepName } from '../../src/database/switchover-service.ts';
import { PreconditionFailedError } from '../../src/http/app-error.ts';

/** Two database nodes, the shared state and read-only mode, as the switchover sees them. */
class World {
  nodes: Record<DatabaseTarget, { primary: boolean; fenced: boolean; up: boolean; lsn: number; replayed: number; paused: boolean }> = {
    primary: { primary: true, fenced: false, up: true, lsn: 1000, replayed: 1000, paused: false },
    replica: { primary: false, fenced: false, up: true, lsn: 1000, replayed: 1000, paused: false },
  };
  state: DrState = { ...INITIAL_STATE, database: { active: 'primary', since: null, by: null } };
  readOnly = false;
  lock: string | null = null;
  /** Operations that fail (once each) and the step hook fault. */
  failing = new Set<string>();

  fail(op: string): void {
    if (this.failing.delete(op)) throw new Error(`injected: ${op} failed`);
  }
  node(t: DatabaseTarget) {
    const n = this.nodes[t];
    if (!n.up) throw new Error(`${t} is down`);
    return n;
  }
  /** Acknowledged writes land on the writable node; a standby streams them unless paused. */
  write(bytes: number): void {
    const writer = (['primary', 'replica'] as const).find((t) => this.nodes[t].primary && !this.nodes[t].fenced && this.state.database.active === t);
    if (!writer || this.readOnly) return;
    this.nodes[writer].lsn += bytes;
    const other = this.nodes[writer === 'primary' ? 'replica' : 'primary'];
    if (!other.primary && !other.paused) other.replayed = this.nodes[writer].lsn;
  }
}

const lsn = (n: number) => `0/${n.toString(16).toUpperCase()}`;

function service(world: World) {
  const s = new SwitchoverService({
    clients: { has: () => true },
    nodes: {
      async facts(t): Promise<NodeFacts> {
        const n = world.nodes[t];
        if (!n.up) return { ok: false, error: 'down', inRecovery: false, currentLsn: null, replayLsn: null, replayPaused: false, receiverStatus: null, streamingStandbys: 0, fenced: false, timeline: null };
        const other = world.nodes[t === 'primary' ? 'replica' : 'primary'];
        return {
          ok: true,
          inRecovery: !n.primary,
          currentLsn: n.primary ? lsn(n.lsn) : null,
          replayLsn: n.primary ? null : lsn(n.replayed),
          replayPaused: n.paused,
          receiverStatus: n.primary ? null : 'streaming',
          streamingStandbys: n.primary && other.up && !other.primary ? 1 : 0,
          fenced: n.fenced,
          timeline: 1,
        };
      },
      async fence(t) {
        world.fail('fence');
        const n = world.node(t);
        n.fenced = true;
        const standby = world.nodes[t === 'primary' ? 'replica' : 'primary'];
        if (!standby.paused && standby.up) standby.replayed = n.lsn;
        return { lsn: lsn(n.lsn), terminated: 0 };
      },
      async unfence(t) {
        world.fail('unfence');
        world.node(t).fenced = false;
      },
      async waitForReplay(t, target) {
        world.fail('waitForReplay');
        const n = world.node(t);
        if (lsnGap(target, lsn(n.replayed)) > 0) throw new Error(`${t} did not replay up to ${target}`);
        return lsn(n.replayed);
      },
      async stop(t) {
        world.fail('stop');
        world.node(t).up = false;
      },
      async promote(t) {
        world.fail('promote');
        const n = world.node(t);
        n.primary = true;
        n.lsn = n.replayed;
      },
    },
    failover: {
      async withLock(operation, fn) {
        if (world.lock) throw new Error('locked');
        world.lock = operation;
        try {
          return await fn();
        } finally {
          world.lock = null;
        }
      },
      lockHolder: async () => world.lock,
    },
    dr: { current: () => world.state, waitForInstances: async () => ({ applied: 1, total: 1, instances: [] }) },
    readOnly: { isActive: () => world.readOnly },
    barrier: {
      async engage() {
        world.fail('engage');
        world.readOnly = true;
        return { applied: 1, total: 1 };
      },
      async release() {
        world.fail('release');
        world.readOnly = false;
      },
    },
    metrics: { failoverTotal: { inc: () => undefined } } as never,
    logger: { warn: () => undefined, error: () => undefined } as never,
    recordSwitch: async (to) => {
      world.fail('recordSwitch');
      world.state = { ...world.state, version: world.state.version + 1, database: { ...world.state.database, active: to } };
    },
  });
  return s;
}

/** The invariant after any switchover, whatever failed: one writable node, the active one, nothing lost. */
function check(world: World, before: { lsn: number }, outcome: Record<string, unknown>) {
  const writable = (['primary', 'replica'] as const).filter((t) => world.nodes[t].primary && !world.nodes[t].fenced);
  const active = world.state.database.active;
  const consistent = outcome.rolledBack === true || outcome.rolledForward === true || outcome.switched === true;
  if (consistent) {
    expect(writable).toEqual([active]);
    expect(world.readOnly).toBe(false);
    expect(world.lock).toBeNull();
  }
  // Nothing acknowledged before the switchover is missing on the node that now takes writes.
  if (writable.length === 1) expect(world.nodes[writable[0]!].lsn).toBeGreaterThanOrEqual(before.lsn);
}

describe('SwitchoverService with fakes', () => {
  it('switches with 0 bytes lost and reports every step', async () => {
    const world = new World();
    const result = await service(world).switchover({ to: 'replica', dryRun: false }, 'ops');
    expect(result).toMatchObject({ switched: true, from: 'primary', to: 'replica', bytesLost: 0 });
    expect((result as { steps: { name: string }[] }).steps.map((s) => s.name)).toEqual(['read_only_on', 'fence_old_primary', 'wait_for_replay', 'promote', 'switch', 'read_only_off', 'stop_old_primary']);
    expect(result).toMatchObject({ roles: { replica: 'primary', primary: 'stopped' } });
    expect(world.state.database.active).toBe('replica');
    expect(world.nodes.primary).toMatchObject({ fenced: true, up: false });
  });

  it('a failed stop of the old primary fails nothing: it stays fenced, the switchover stands', async () => {
    const world = new World();
    world.failing.add('stop');
    const result = await service(world).switchover({ to: 'replica', dryRun: false }, 'ops');
    expect(result).toMatchObject({ switched: true, bytesLost: 0, roles: { primary: 'fenced' } });
    expect((result as { steps: { name: string; ok: boolean }[] }).steps.at(-1)).toMatchObject({ name: 'stop_old_primary', ok: false });
    expect(world.nodes.primary).toMatchObject({ fenced: true, up: true });
  });

  it('refuses (412, nothing changed) a paused or lagging standby, and a standby that is down', async () => {
    const world = new World();
    world.nodes.replica.paused = true;
    world.write(64 * 1024 * 1024);
    await expect(service(world).switchover({ to: 'replica', dryRun: false }, 'ops')).rejects.toBeInstanceOf(PreconditionFailedError);
    world.nodes.replica.up = false;
    const dry = await service(world).switchover({ to: 'replica', dryRun: true }, 'ops');
    expect(dry).toMatchObject({ wouldSwitch: false });
    expect(world.readOnly).toBe(false);
    expect(world.nodes.primary.fenced).toBe(false);
  });

  it('leaves an operator\'s read-only mode exactly as it was (never engaged, never lifted)', async () => {
    const world = new World();
    world.readOnly = true;
    world.failing.add('engage').add('release'); // would throw if touched
    const result = await service(world).switchover({ to: 'replica', dryRun: false }, 'ops');
    expect(result).toMatchObject({ switched: true, writeUnavailableMs: 0 });
    expect(world.readOnly).toBe(true);
    expect(world.failing).toEqual(new Set(['engage', 'release']));
  });

  it('of two switchovers at once, one switches and the other is refused; the pair stays consistent', async () => {
    const world = new World();
    const results = await Promise.allSettled([service(world).switchover({ to: 'replica', dryRun: false }, 'a'), service(world).switchover({ to: 'replica', dryRun: false }, 'b')]);
    expect(results.filter((r) => r.status === 'fulfilled' && (r.value as { switched: boolean }).switched)).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(1);
    check(world, { lsn: 1000 }, { switched: true });
    expect(world.state.database.active).toBe('replica');
  });

  const faults = ['engage', 'fence', 'waitForReplay', 'promote', 'recordSwitch', 'release', 'stop'];
  const steps: StepName[] = ['read_only_on', 'fence_old_primary', 'wait_for_replay', 'promote', 'switch', 'read_only_off', 'stop_old_primary'];

  it('whatever step fails (random faults, also in the rollback), the answer says what holds and the invariant holds', async () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let run = 0; run < 300; run += 1) {
      const world = new World();
      world.write(Math.floor(random() * 5000));
      const n = Math.floor(random() * 3);
      for (let i = 0; i < n; i += 1) world.failing.add(faults[Math.floor(random() * faults.length)]!);
      if (random() < 0.2) world.failing.add('unfence');
      const svc = service(world);
      const hookAt = random() < 0.3 ? steps[Math.floor(random() * steps.length)] : undefined;
      // A write racing the switchover: acknowledged only if writes are open on the active node.
      svc.hook = (step) => {
        world.write(100);
        if (step === hookAt) throw new Error(`injected at ${step}`);
      };
      const before = { lsn: Math.max(world.nodes.primary.lsn, world.nodes.replica.lsn) };
      let outcome: Record<string, unknown>;
      try {
        outcome = (await svc.switchover({ to: 'replica', dryRun: false }, 'ops')) as Record<string, unknown>;
        expect(outcome.bytesLost).toBe(0);
      } catch (err) {
        expect(err).toBeInstanceOf(SwitchoverFailedError);
        outcome = (err as SwitchoverFailedError).extra;
        const promoted = world.nodes.replica.primary;
        // Before the promotion it goes back, after it forward: never to a node on an older timeline.
        if (promoted) expect(outcome.rolledBack).toBe(false);
        else expect(outcome.rolledForward).toBeUndefined();
        if (outcome.rolledBack === true) expect(world.state.database.active).toBe('primary');
        if (outcome.rolledForward === true) expect(world.state.database.active).toBe('replica');
      }
      check(world, before, outcome);
    }
  });
});

describe('recovery of a switchover whose instance died midway', () => {
  it('unfences the active target and lifts the switchover\'s read-only mode; a fence set by hand stays', async () => {
    const world = new World();
    world.nodes.primary.fenced = true;
    world.readOnly = true;
    const svc = service(world);
    // Read-only mode on for another reason (or off): not a switchover's fence, left alone.
    world.state = { ...world.state, readOnly: { enabled: true, reason: 'maintenance', since: null, by: 'ops', expiresAt: null } };
    expect(await svc.recoverInterrupted('primary')).toBeNull();
    expect(world.nodes.primary.fenced).toBe(true);
    // While another operation holds the lock: left alone.
    world.state = { ...world.state, readOnly: { enabled: true, reason: 'kept on at TTL expiry: fenced (was: switchover: primary to replica)', since: null, by: 'system:ttl', expiresAt: null } };
    world.lock = 'switchover';
    expect(await svc.recoverInterrupted('primary')).toBeNull();
    world.lock = null;
    expect(await svc.recoverInterrupted('primary')).toContain('interrupted switchover');
    expect(world.nodes.primary.fenced).toBe(false);
    expect(world.readOnly).toBe(false);
  });
});
