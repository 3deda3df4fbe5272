import type { DatabaseTarget } from '../../src/domain.ts';
import { INITIAL_STATE, type DrState } from '../../src/services/dr-state/dr-state.ts';
import { lsnGap } from '../../src/services/database/lsn.ts';
import type { NodeFacts } from '../../src/services/database/sql-nodes.ts';
import { SwitchoverFailedError, SwitchoverService, type StepName } from '../../src/services/database/switchover-service.ts';
import { PreconditionFailedError } from '../../src/http/app-error.ts';

/** Two database nodes, the shared state and read-only mode, as the switchover sees them. */
class World {
  nodes: Record<DatabaseTarget, { primary: boolean; fenced: boolean; up: boolean; lsn: number; replayed: number; paused: boolean }> = {
    primary: { primary: true, fenced: false, up: true, lsn: 1000, replayed: 1000, paused: false },
    replica: { primary: false, fenced: false, up: true, lsn: 1000, replayed: 1000, paused: false },
  };
  state: DrState = { ...INITIAL_STATE, database: { active: 'primary', since: null, by: null } };
  readOnly = false;
  readOnlyTtl: number | undefined;
  lock: string | null = null;
  /** Operations that fail (once each) and the step hook fault. */
  failing = new Set<string>();
  /** Promotions recorded as abandoned on every instance (the node, its timeline). */
  abandoned: { node: DatabaseTarget; timeline: number }[] = [];
  timeline: Record<DatabaseTarget, number> = { primary: 1, replica: 1 };

  fail(op: string): void {
    if (this.failing.delete(op)) throw new Error(`injected: ${op} failed`);
  }
  /** As an instance sees it: a node on an abandoned timeline is fenced should it come back. */
  takesWrites(t: DatabaseTarget): boolean {
    const n = this.nodes[t];
    return n.up && n.primary && !n.fenced && !this.abandoned.some((a) => a.node === t && a.timeline === this.timeline[t]);
  }
  node(t: DatabaseTarget) {
    const n = this.nodes[t];
    if (!n.up) throw new Error(`${t} is down`);
    return n;
  }
  /** Acknowledged writes land on the writable node; a standby streams them unless paused. */
  write(bytes: number): void {
    const writer = (['primary', 'replica'] as const).find((t) => this.takesWrites(t) && this.state.database.active === t);
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
        if (!n.up)
          return {
            ok: false,
            error: 'down',
            inRecovery: false,
            currentLsn: null,
            replayLsn: null,
            replayPaused: false,
            receiverStatus: null,
            streamingStandbys: 0,
            fenced: false,
            timeline: null,
          };
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
          timeline: world.timeline[t],
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
        world.timeline[t] += 1;
        return { timeline: world.timeline[t] };
      },
      async verifyWrites(t) {
        world.fail('verifyWrites');
        if (!world.node(t).primary || world.nodes[t].fenced) throw new Error(`${t} takes no writes`);
        return { lsn: lsn(world.nodes[t].lsn), timeline: world.timeline[t] };
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
    dr: {
      current: () => world.state,
      waitForInstances: async () => ({
        applied: 1,
        total: 1,
        instances: [],
        complete: true,
        notApplied: [],
        stale: [],
        leaseMs: 5000,
        waitedMs: 0,
      }),
    },
    readOnly: { isActive: () => world.readOnly },
    barrier: {
      async engage(_reason, ttlSeconds) {
        world.fail('engage');
        world.readOnly = true;
        world.readOnlyTtl = ttlSeconds;
        return { applied: 1, total: 1 };
      },
      async release() {
        world.fail('release');
        world.readOnly = false;
      },
    },
    metrics: { failoverTotal: { inc: () => undefined } } as never,
    logger: { warn: () => undefined, error: () => undefined } as never,
    forgetAbandoned: async (node) => {
      world.fail('forget');
      world.abandoned = world.abandoned.filter((a) => a.node !== node);
    },
    abandonPromotion: async (node, timeline) => {
      world.fail('abandon');
      world.abandoned.push({ node, timeline });
    },
    recordSwitch: async (to) => {
      world.fail('recordSwitch');
      world.state = { ...world.state, version: world.state.version + 1, database: { ...world.state.database, active: to } };
    },
  });
  return s;
}

/** The invariant after any switchover, whatever failed: one writable node, the active one, nothing lost. */
function check(world: World, before: { lsn: number }, outcome: Record<string, unknown>) {
  const writable = (['primary', 'replica'] as const).filter((t) => world.takesWrites(t));
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
    expect((result as { steps: { name: string }[] }).steps.map((s) => s.name)).toEqual([
      'read_only_on',
      'fence_old_primary',
      'wait_for_replay',
      'promote',
      'verify_writes',
      'switch',
      'read_only_off',
      'stop_old_primary',
    ]);
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

  it("leaves an operator's read-only mode exactly as it was (never engaged, never lifted)", async () => {
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
    const results = await Promise.allSettled([
      service(world).switchover({ to: 'replica', dryRun: false }, 'a'),
      service(world).switchover({ to: 'replica', dryRun: false }, 'b'),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled' && (r.value as { switched: boolean }).switched)).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(1);
    check(world, { lsn: 1000 }, { switched: true });
    expect(world.state.database.active).toBe('replica');
  });

  const faults = ['engage', 'fence', 'waitForReplay', 'promote', 'verifyWrites', 'abandon', 'recordSwitch', 'release', 'stop'];
  const steps: StepName[] = [
    'read_only_on',
    'fence_old_primary',
    'wait_for_replay',
    'promote',
    'verify_writes',
    'switch',
    'read_only_off',
    'stop_old_primary',
  ];

  it('whatever step fails (random faults, also in the rollback), the answer says what holds and the invariant holds', async () => {
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const seen = { rolledBackAfterPromotion: 0, rolledForward: 0, notStopped: 0 };
    for (let run = 0; run < 400; run += 1) {
      const world = new World();
      world.write(Math.floor(random() * 5000));
      const n = Math.floor(random() * 3);
      for (let i = 0; i < n; i += 1) world.failing.add(faults[Math.floor(random() * faults.length)]!);
      if (random() < 0.2) world.failing.add('unfence');
      const svc = service(world);
      const hookAt = random() < 0.3 ? steps[Math.floor(random() * steps.length)] : undefined;
      // The promoted node dies right after its promotion, or after writes resumed on it.
      const killAt = random() < 0.2 ? (random() < 0.5 ? 'verify_writes' : 'stop_old_primary') : undefined;
      // A write racing the switchover: acknowledged only if writes are open on the active node.
      svc.hook = (step) => {
        world.write(100);
        if (step === killAt) world.nodes.replica.up = false;
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
        const abandoned = world.abandoned.some((a) => a.node === 'replica');
        // Before the promotion, or a promoted node that failed its write check: back, its timeline
        // abandoned on every instance first. After the write check: forward, never back to an older timeline.
        if (promoted && !abandoned) expect(outcome.rolledBack).not.toBe(true);
        if (!promoted) expect(outcome.rolledForward).toBeUndefined();
        if (outcome.rolledForward === true) expect(abandoned).toBe(false);
        if (outcome.abandonedTimeline !== undefined && outcome.rolledBack === true) seen.rolledBackAfterPromotion += 1;
        if (outcome.rolledForward === true) seen.rolledForward += 1;
        if (outcome.failedStep === 'stop_old_primary') seen.notStopped += 1;
        // The old primary is never stopped unless the promoted node took writes and still does.
        if (!world.nodes.primary.up) expect(world.nodes.replica).toMatchObject({ up: true, primary: true });
        if (outcome.rolledBack === true) expect(world.state.database.active).toBe('primary');
        if (outcome.rolledForward === true) expect(world.state.database.active).toBe('replica');
      }
      check(world, before, outcome);
    }
    // Every path was taken.
    expect(seen.rolledBackAfterPromotion).toBeGreaterThan(0);
    expect(seen.rolledForward).toBeGreaterThan(0);
    expect(seen.notStopped).toBeGreaterThan(0);
  });

  it('the promoted node dies right after its promotion: not stopped, not switched to; rolled back to the old primary, which takes writes again', async () => {
    const world = new World();
    const svc = service(world);
    svc.hook = (step) => {
      if (step === 'verify_writes') world.nodes.replica.up = false;
    };
    const err = (await svc.switchover({ to: 'replica', dryRun: false }, 'ops').catch((e: unknown) => e)) as SwitchoverFailedError;
    expect(err).toBeInstanceOf(SwitchoverFailedError);
    expect(err.extra).toMatchObject({ failedStep: 'verify_writes', rolledBack: true, writable: 'primary', abandonedTimeline: 2 });
    expect((err.extra.steps as { name: string }[]).map((x) => x.name)).toEqual([
      'read_only_on',
      'fence_old_primary',
      'wait_for_replay',
      'promote',
      'verify_writes',
    ]);
    expect((err.extra.rollback as { name: string; ok: boolean }[]).map((x) => [x.name, x.ok])).toEqual([
      ['fence_promoted', false],
      ['abandon_promotion', true],
      ['unfence_old_primary', true],
      ['verify_old_primary_writes', true],
      ['read_only_off', true],
    ]);
    expect(world.nodes.primary).toMatchObject({ up: true, fenced: false });
    expect(world.state.database.active).toBe('primary');
    expect(world.readOnly).toBe(false);
    expect(world.abandoned).toEqual([{ node: 'replica', timeline: 2 }]);
  });

  it('the node whose promotion was abandoned, rebuilt as a standby, can be promoted again on the same timeline number', async () => {
    const world = new World();
    const svc = service(world);
    svc.hook = (step) => {
      if (step === 'verify_writes') world.nodes.replica.up = false;
    };
    await expect(svc.switchover({ to: 'replica', dryRun: false }, 'ops')).rejects.toBeInstanceOf(SwitchoverFailedError);
    expect(world.abandoned).toEqual([{ node: 'replica', timeline: 2 }]);
    // Rebuilt from scratch as a standby of the primary (timeline 1): its next promotion is timeline 2 again.
    world.nodes.replica = {
      primary: false,
      fenced: false,
      up: true,
      lsn: world.nodes.primary.lsn,
      replayed: world.nodes.primary.lsn,
      paused: false,
    };
    world.timeline.replica = 1;
    svc.hook = undefined;
    const result = await svc.switchover({ to: 'replica', dryRun: false }, 'ops');
    expect(result).toMatchObject({ switched: true, bytesLost: 0 });
    expect(world.abandoned).toEqual([]);
    check(world, { lsn: 1000 }, result as Record<string, unknown>);
  });

  it('the promoted node dies and the old primary cannot take writes either: read-only mode stays on, the answer says so', async () => {
    const world = new World();
    const svc = service(world);
    svc.hook = (step) => {
      if (step === 'verify_writes') {
        world.nodes.replica.up = false;
        world.failing.add('unfence');
      }
    };
    const err = (await svc.switchover({ to: 'replica', dryRun: false }, 'ops').catch((e: unknown) => e)) as SwitchoverFailedError;
    expect(err.extra).toMatchObject({ failedStep: 'verify_writes', rolledBack: false, writable: null });
    expect(err.message).toContain('NO DATABASE NODE TAKES WRITES');
    expect(world.readOnly).toBe(true);
    // The switchover's own mode had a TTL; it is set again with none: it stays on until an operator lifts it.
    expect(world.readOnlyTtl).toBeUndefined();
    expect(err.extra.rollback).toContainEqual(expect.objectContaining({ name: 'read_only_until_lifted', ok: true }));
    expect(world.nodes.primary).toMatchObject({ up: true, fenced: true });
  });

  it('the old primary is never unfenced before every instance applied the abandoned promotion', async () => {
    const world = new World();
    const svc = service(world);
    svc.hook = (step) => {
      if (step === 'verify_writes') {
        world.nodes.replica.up = false;
        world.failing.add('abandon');
      }
    };
    const err = (await svc.switchover({ to: 'replica', dryRun: false }, 'ops').catch((e: unknown) => e)) as SwitchoverFailedError;
    expect(err.extra).toMatchObject({ rolledBack: false, writable: null });
    expect(world.nodes.primary.fenced).toBe(true);
    expect(world.readOnly).toBe(true);
  });

  it('the promoted node stops taking writes after writes resumed on it: the old primary is not stopped, the answer is a failure naming the step', async () => {
    const world = new World();
    const svc = service(world);
    svc.hook = (step) => {
      if (step === 'stop_old_primary') world.nodes.replica.up = false;
    };
    const err = (await svc.switchover({ to: 'replica', dryRun: false }, 'ops').catch((e: unknown) => e)) as SwitchoverFailedError;
    expect(err).toBeInstanceOf(SwitchoverFailedError);
    expect(err.extra).toMatchObject({ failedStep: 'stop_old_primary', rolledBack: false, rolledForward: false, bytesLost: 0 });
    expect(world.nodes.primary).toMatchObject({ up: true, fenced: true });
  });

  it('the switch fails after the promotion and completing it fails too: read-only mode stays on with no expiry', async () => {
    const world = new World();
    const svc = service(world);
    svc.hook = (step) => {
      if (step === 'switch') world.failing.add('recordSwitch');
    };
    // The retry of the switch in the roll forward fails too.
    const record = svc['deps'].recordSwitch;
    let calls = 0;
    svc['deps'].recordSwitch = async (...args) => {
      calls += 1;
      if (calls === 2) throw new Error('injected: recordSwitch failed again');
      return record(...args);
    };
    const err = (await svc.switchover({ to: 'replica', dryRun: false }, 'ops').catch((e: unknown) => e)) as SwitchoverFailedError;
    expect(err.extra).toMatchObject({ failedStep: 'switch', rolledForward: false });
    expect(err.extra.rollForward).toContainEqual(expect.objectContaining({ name: 'read_only_until_lifted', ok: true }));
    // The switchover's read-only mode had a 60 s TTL: it would have expired into writes on the fenced old primary.
    expect(world.readOnly).toBe(true);
    expect(world.readOnlyTtl).toBeUndefined();
  });

  it('a switchover to the node that already is the primary names it as both from and to', async () => {
    const world = new World();
    const result = await service(world).switchover({ to: 'primary', dryRun: false }, 'ops');
    expect(result).toMatchObject({ switched: false, from: 'primary', to: 'primary', roles: { primary: 'primary' } });
  });
});

describe('recovery of a switchover whose instance died midway', () => {
  it("unfences the active target and lifts the switchover's read-only mode; a fence set by hand stays", async () => {
    const world = new World();
    world.nodes.primary.fenced = true;
    world.readOnly = true;
    const svc = service(world);
    // Read-only mode on for another reason (or off): not a switchover's fence, left alone.
    world.state = { ...world.state, readOnly: { enabled: true, reason: 'maintenance', since: null, by: 'ops', expiresAt: null } };
    expect(await svc.recoverInterrupted('primary')).toBeNull();
    expect(world.nodes.primary.fenced).toBe(true);
    // While another operation holds the lock: left alone.
    world.state = {
      ...world.state,
      readOnly: {
        enabled: true,
        reason: 'kept on at TTL expiry: fenced (was: switchover: primary to replica)',
        since: null,
        by: 'system:ttl',
        expiresAt: null,
      },
    };
    world.lock = 'switchover';
    expect(await svc.recoverInterrupted('primary')).toBeNull();
    world.lock = null;
    expect(await svc.recoverInterrupted('primary')).toContain('interrupted switchover');
    expect(world.nodes.primary.fenced).toBe(false);
    expect(world.readOnly).toBe(false);
  });
});
