import {
  WriteFencedError,
  WriteGate,
  WriteOutcomeUnknownError,
  WriteRefusedError,
  type WriteGateOptions,
  type WriteRefusal,
} from '../../src/services/write-gate/write-gate.ts';

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('WriteGate (the write barrier)', () => {
  let refusal: WriteRefusal | null = null;
  const gate = () => new WriteGate(() => refusal);
  beforeEach(() => {
    refusal = null;
  });

  it('refuses admission with the reason while writes are closed', () => {
    refusal = { code: 'state_unknown', message: 'unknown' };
    expect(() => gate().admit()).toThrow(WriteRefusedError);
  });

  it("a write whose client went away while it commits is counted as waited for, never as a negative 'failing'", async () => {
    const g = gate();
    const ticket = g.admit();
    const commit = deferred<string>();
    const running = g.within(ticket, () => g.commit(() => commit.promise));
    g.release(ticket); // the client aborted; the commit goes on
    const barrier = g.barrier(1000);
    commit.resolve('row');
    await running;
    expect(await barrier).toMatchObject({ inFlight: 0, waitedFor: 1, failing: 0 });
  });

  it('a barrier waits for commits under way, and fails writes that reach their commit after it', async () => {
    const g = gate();
    const committing = g.admit();
    const later = g.admit();
    const commit = deferred<string>();
    const first = g.within(committing, () => g.commit(() => commit.promise));
    const barrier = g.barrier(1000);
    let answered = false;
    void barrier.then(() => (answered = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(answered).toBe(false); // still waiting for the commit under way
    commit.resolve('row');
    expect(await first).toBe('row');
    expect(await barrier).toMatchObject({ inFlight: 2, waitedFor: 1, failing: 1, drained: true });
    let ran = false;
    await expect(
      g.within(later, () =>
        g.commit(async () => {
          ran = true;
        }),
      ),
    ).rejects.toThrow(WriteFencedError);
    expect(ran).toBe(false);
    // A write admitted after the barrier commits normally.
    const fresh = g.admit();
    await expect(g.within(fresh, () => g.commit(async () => 'ok'))).resolves.toBe('ok');
  });

  it('a commit still running at the bound is abandoned: applied with nothing vouching for its order, it is outcome_unknown, never write_fenced', async () => {
    const g = gate();
    const ticket = g.admit();
    const commit = deferred<string>();
    const write = g.within(ticket, () => g.commit(() => commit.promise));
    const report = await g.barrier(30, 1);
    expect(report).toMatchObject({ waitedFor: 1, drained: false });
    expect(ticket.abandonedBy).toEqual([1]);
    commit.resolve('late');
    const err = await write.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WriteOutcomeUnknownError);
    expect(err).toMatchObject({ status: 503, code: 'outcome_unknown', settled: true });
  });

  it('writes closed while a write ran (e.g. read-only via TTL-free check) fail at the commit', async () => {
    const g = gate();
    const ticket = g.admit();
    refusal = { code: 'not_writable', message: 'standby' };
    await expect(g.within(ticket, () => g.commit(async () => 1))).rejects.toThrow(/standby/);
  });

  it('random interleavings: no commit that started after a barrier returned ever succeeds for a write admitted before it', async () => {
    for (let round = 0; round < 50; round += 1) {
      const g = gate();
      const tickets = Array.from({ length: 8 }, () => g.admit());
      const outcomes: { admittedBefore: boolean; startedAfterBarrier: boolean; ok: boolean }[] = [];
      let barrierDone = false;
      const writes = tickets.map((t) =>
        (async () => {
          await new Promise((r) => setTimeout(r, Math.random() * 10));
          const startedAfterBarrier = barrierDone;
          const ok = await g
            .within(t, () => g.commit(() => new Promise((r) => setTimeout(r, Math.random() * 5))))
            .then(
              () => true,
              () => false,
            );
          outcomes.push({ admittedBefore: true, startedAfterBarrier, ok });
        })(),
      );
      await new Promise((r) => setTimeout(r, Math.random() * 10));
      const report = await g.barrier(1000);
      barrierDone = true;
      const succeededAfter = outcomes.length;
      await Promise.all(writes);
      expect(outcomes.filter((o) => o.startedAfterBarrier && o.ok)).toEqual([]);
      // Everything that succeeded had finished by the time the barrier answered.
      expect(outcomes.filter((o) => o.ok).length).toBeLessThanOrEqual(succeededAfter);
      expect(report.drained).toBe(true);
    }
  });
});

/** Issue 10 F2: the answer to a write whose commit the barrier gave up on is the truth about that commit. */
describe('WriteGate: commits a barrier gave up on', () => {
  let version = 1;
  let refusal: WriteRefusal | null = null;
  const gate = (options: WriteGateOptions = {}) =>
    new WriteGate(
      () => refusal,
      () => version,
      { settleMs: 1000, ...options },
    );
  beforeEach(() => {
    version = 1;
    refusal = null;
  });

  /** Admits a write, starts its commit and lets a barrier for version 2 give up on it. */
  async function abandoned<T>(g: WriteGate, commit: Promise<T>) {
    version = 1;
    const ticket = g.admit();
    const write = g.within(ticket, () => g.commit(() => commit));
    version = 2;
    const report = await g.barrier(20, 2);
    expect(report).toMatchObject({ inFlight: 1, waitedFor: 1, failing: 0, drained: false });
    expect(ticket.abandonedBy).toEqual([2]);
    return {
      ticket,
      write: write.then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
    };
  }

  it('applied before the change answered (its fence raised by this instance): acknowledged', async () => {
    const g = gate({ fenceRaised: (v) => v === 2 });
    const commit = deferred<string>();
    const { write } = await abandoned(g, commit.promise);
    commit.resolve('saved');
    expect(await write).toEqual({ value: 'saved' });
  });

  it('waits for the fence raise to end before it answers, and follows its outcome', async () => {
    for (const raised of [true, false]) {
      const fence = deferred<boolean>();
      const g = gate({ fenceRaised: () => fence.promise });
      const commit = deferred<string>();
      const { write } = await abandoned(g, commit.promise);
      commit.resolve('saved');
      let answered = false;
      void write.then(() => (answered = true));
      await new Promise((r) => setTimeout(r, 20));
      expect(answered).toBe(false);
      fence.resolve(raised);
      const answer = await write;
      if (raised) expect(answer).toEqual({ value: 'saved' });
      else expect(answer).toMatchObject({ error: { code: 'outcome_unknown', settled: true } });
    }
  });

  it('applied with the fence not raised everywhere (or no fence): outcome_unknown, not acknowledged, not refused', async () => {
    for (const options of [{ fenceRaised: () => false }, {}] as WriteGateOptions[]) {
      const commit = deferred<string>();
      const { write } = await abandoned(gate(options), commit.promise);
      commit.resolve('saved');
      const { error } = (await write) as { error: unknown };
      expect(error).toBeInstanceOf(WriteOutcomeUnknownError);
      expect(error).not.toBeInstanceOf(WriteFencedError);
    }
  });

  it('refused by the database fence, or failed with an ERROR from the server (e.g. cancelled by the fence raise): write_fenced', async () => {
    const fenced = new WriteFencedError('the database write fence refused its commit');
    for (const failure of [
      fenced,
      Object.assign(new Error('canceling statement due to user request'), { severity: 'ERROR', code: '57014' }),
    ]) {
      const commit = deferred<string>();
      const { write } = await abandoned(
        gate({ fenceRaised: () => true }),
        commit.promise.then(() => Promise.reject(failure)),
      );
      commit.resolve('');
      const { error } = (await write) as { error: unknown };
      expect(error).toBeInstanceOf(WriteFencedError);
      if (failure === fenced) expect(error).toBe(fenced);
    }
  });

  it('an error marked as nothing applied (a commit past its deadline) keeps its own answer', async () => {
    const late = Object.assign(new Error('the write reached its commit deadline'), { nothingChanged: true });
    const commit = deferred<string>();
    const { write } = await abandoned(
      gate(),
      commit.promise.then(() => Promise.reject(late)),
    );
    commit.resolve('');
    expect(await write).toEqual({ error: late });
  });

  it('an error that does not say whether it was applied (connection lost, FATAL after the commit): outcome_unknown, cache not settled', async () => {
    for (const failure of [
      new Error('Connection terminated unexpectedly'),
      Object.assign(new Error('terminating connection due to administrator command'), { severity: 'FATAL', code: '57P01' }),
    ]) {
      const commit = deferred<string>();
      const { write } = await abandoned(
        gate({ fenceRaised: () => true }),
        commit.promise.then(() => Promise.reject(failure)),
      );
      commit.resolve('');
      expect(await write).toMatchObject({ error: { code: 'outcome_unknown', settled: false } });
    }
  });

  it('a commit that does not end within the settle bound is answered outcome_unknown; its later end is harmless', async () => {
    const g = gate({ fenceRaised: () => true, settleMs: 30 });
    const commit = deferred<string>();
    const { write } = await abandoned(g, commit.promise);
    expect(await write).toMatchObject({ error: { code: 'outcome_unknown', settled: false } });
    commit.resolve('too late');
    await new Promise((r) => setTimeout(r, 10));
    expect(g.inFlight()).toBe(1); // still registered until the request releases it
  });

  it('two barriers gave up on it: acknowledged only if the fences of both were raised', async () => {
    for (const raisedFor of [[2, 3], [2]]) {
      const g = gate({ fenceRaised: (v) => raisedFor.includes(v) });
      const commit = deferred<string>();
      const { ticket, write } = await abandoned(g, commit.promise);
      version = 3;
      expect(await g.barrier(10, 3)).toMatchObject({ waitedFor: 1, drained: false });
      expect(ticket.abandonedBy).toEqual([2, 3]);
      commit.resolve('saved');
      const answer = await write;
      if (raisedFor.length === 2) expect(answer).toEqual({ value: 'saved' });
      else expect(answer).toMatchObject({ error: { code: 'outcome_unknown' } });
    }
  });

  it('a write admitted under the change’s own version is not held back by its fence: never acknowledged on the fence’s word', async () => {
    const g = gate({ fenceRaised: () => true });
    version = 2;
    const ticket = g.admit();
    const commit = deferred<string>();
    const write = g.within(ticket, () => g.commit(() => commit.promise)).catch((e: unknown) => e);
    await g.barrier(10, 2);
    commit.resolve('saved');
    expect(await write).toMatchObject({ code: 'outcome_unknown' });
  });

  it('the lease ran out: acknowledged only once the state is confirmed again, unchanged since admission', async () => {
    for (const after of ['unchanged', 'changed', 'still closed'] as const) {
      version = 1;
      refusal = null;
      const g = gate({ fenceRaised: () => true });
      const ticket = g.admit();
      const commit = deferred<string>();
      const write = g.within(ticket, () => g.commit(() => commit.promise)).catch((e: unknown) => e);
      refusal = { code: 'state_stale', message: 'lease' };
      expect(await g.barrier(10)).toMatchObject({ drained: false });
      expect(ticket.abandonedBy).toEqual([null]);
      if (after !== 'still closed') refusal = null;
      if (after === 'changed') version = 2;
      commit.resolve('saved');
      if (after === 'unchanged') expect(await write).toBe('saved');
      else expect(await write).toMatchObject({ code: 'outcome_unknown', settled: true });
    }
  });

  it('a commit that ended within the bound is not marked, even when another one is given up on', async () => {
    const g = gate();
    const [fast, slow] = [g.admit(), g.admit()];
    const [c1, c2] = [deferred<string>(), deferred<string>()];
    const w1 = g.within(fast, () => g.commit(() => c1.promise));
    const w2 = g.within(slow, () => g.commit(() => c2.promise)).catch((e: unknown) => e);
    const barrier = g.barrier(30, 2);
    c1.resolve('fast');
    expect(await w1).toBe('fast');
    expect(await barrier).toMatchObject({ inFlight: 2, waitedFor: 2, drained: false });
    expect(fast.abandonedBy).toEqual([]);
    expect(slow.abandonedBy).toEqual([2]);
    c2.resolve('slow');
    expect(await w2).toMatchObject({ code: 'outcome_unknown' });
  });

  /**
   * A model of the database write fence (media-repository checkFence, DatabaseWriteFence): a commit
   * takes the fence row FOR SHARE (refused when the epoch is above its admitted version) and holds
   * it until it ends; a raise waits for the holders, cancels those left after `cancelAfterMs` (a
   * commit behind a row lock fails with an ERROR; one waiting for a synchronous standby is already
   * applied and succeeds), then moves the epoch; a failing raise moves nothing. Random orderings of
   * commit kinds, durations, bounds and raise outcomes; the checker: write_fenced (or any ERROR)
   * means not applied, an acknowledgement means applied before the change answered.
   */
  it('random orderings against a model of the database fence: refused ⇒ not applied, acknowledged ⇒ applied before the answer', async () => {
    type Kind = 'fast' | 'rowlock' | 'tablelock' | 'sync' | 'cache';
    for (let seed = 1; seed <= 40; seed += 1) {
      let x = seed * 2654435761;
      const rand = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
      const pick = <T>(a: readonly T[]) => a[Math.floor(rand() * a.length)]!;
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      version = 1;
      refusal = null;
      let epoch = 1;
      let raising: Promise<void> | null = null;
      const holders = new Set<{ cancel: () => void; ended: Promise<void> }>();
      const applied = new Set<number>();
      const raiseWorks = rand() < 0.7;
      const cancelAfterMs = 5 + Math.floor(rand() * 40);
      const bound = 5 + Math.floor(rand() * 40);
      let fenceOutcome: Promise<boolean> | undefined;
      const g = new WriteGate(
        () => refusal,
        () => version,
        { fenceRaised: (v) => (v === 2 && fenceOutcome ? fenceOutcome : false), settleMs: 200 },
      );

      const commit = async (id: number, admitted: number, kind: Kind, ms: number): Promise<string> => {
        if (kind === 'tablelock') await sleep(ms); // waits before it takes the fence row
        while (raising) await raising;
        if (epoch > admitted) throw new WriteFencedError('the database write fence refused its commit');
        let cancelled = false;
        let endHold!: () => void;
        const holder = { cancel: () => (cancelled = true), ended: new Promise<void>((r) => (endHold = r)) };
        holders.add(holder);
        try {
          if (kind === 'sync') applied.add(id); // committed locally, waits for the standby
          for (let t = 0; t < (kind === 'rowlock' || kind === 'sync' ? ms : 0) && !cancelled; t += 2) await sleep(2);
          if (cancelled && kind === 'rowlock')
            throw Object.assign(new Error('canceling statement due to user request'), { severity: 'ERROR', code: '57014' });
          applied.add(id);
        } finally {
          holders.delete(holder);
          endHold();
        }
        if (kind === 'cache') await sleep(ms); // applied; its cache update takes a while
        return `saved ${id}`;
      };

      const raise = async (v: number): Promise<boolean> => {
        if (!raiseWorks) {
          await sleep(Math.floor(rand() * 30));
          return false;
        }
        let done!: () => void;
        raising = new Promise<void>((r) => (done = r));
        const waiting = [...holders];
        const canceller = setTimeout(() => waiting.forEach((h) => h.cancel()), cancelAfterMs);
        await Promise.all(waiting.map((h) => h.ended));
        clearTimeout(canceller);
        epoch = Math.max(epoch, v);
        raising = null;
        done();
        return true;
      };

      const writes = Array.from({ length: 6 }, (_, i) => {
        const kind = pick(['fast', 'rowlock', 'tablelock', 'sync', 'cache'] as const);
        const ms = Math.floor(rand() * 80);
        const startAfter = Math.floor(rand() * 20);
        const ticket = g.admit();
        const answer = (async () => {
          await sleep(startAfter);
          return g.within(ticket, () => g.commit(() => commit(i, ticket.stateVersion, kind, ms)));
        })().then(
          (value) => ({ ok: true as const, value }),
          (error: unknown) => ({ ok: false as const, error }),
        );
        return { id: i, kind, answer };
      });

      // The change to version 2 (read-only on): raises the fence and the barrier, answers after both.
      await sleep(Math.floor(rand() * 20));
      version = 2;
      refusal = { code: 'read_only', message: 'read-only mode is on' };
      fenceOutcome = raise(2);
      const [report] = await Promise.all([g.barrier(bound, 2), fenceOutcome]);
      const appliedAtAnswer = new Set(applied);

      const answers = await Promise.all(writes.map(async (w) => ({ ...w, answer: await w.answer })));
      for (const w of answers) {
        const context = { seed, id: w.id, kind: w.kind, raiseWorks, answer: w.answer };
        if (w.answer.ok) {
          expect({ ...context, appliedBeforeAnswer: appliedAtAnswer.has(w.id) }).toMatchObject({ appliedBeforeAnswer: true });
          continue;
        }
        const error = w.answer.error as { code?: string; severity?: string };
        if (error instanceof WriteFencedError || error.severity === 'ERROR')
          expect({ ...context, applied: applied.has(w.id) }).toMatchObject({ applied: false });
        else expect({ ...context, code: error.code }).toMatchObject({ code: 'outcome_unknown' });
      }
      expect(report.inFlight).toBe(6);
      expect(report.waitedFor + report.failing).toBe(6);
    }
  }, 60_000);
});
