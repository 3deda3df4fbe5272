import { WriteFencedError, WriteGate, WriteRefusedError, type WriteRefusal } from '../../src/services/write-gate/write-gate.ts';

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

  it('a commit still running at the bound is abandoned: even if it finishes, it is not acknowledged', async () => {
    const g = gate();
    const ticket = g.admit();
    const commit = deferred<string>();
    const write = g.within(ticket, () => g.commit(() => commit.promise));
    const report = await g.barrier(30);
    expect(report).toMatchObject({ waitedFor: 1, drained: false });
    commit.resolve('late');
    await expect(write).rejects.toThrow(WriteFencedError);
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
