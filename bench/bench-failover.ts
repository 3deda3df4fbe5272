// `npm run bench:failover`: what the write barrier costs and how long a planned switchover keeps
// writes away, with uploads in flight, as ratios and figures measured in this run.
//  1. The barrier on the write path: admit + fenced commit + release per write, against the same
//     commit without the gate (in-process, so the ratio is the gate's own cost).
//  2. Enable read-only with N uploads in flight (N = 0 is the baseline), promote, switch, disable:
//     each step's time and the write unavailability (read-only request → first acknowledged upload).
import { plannedSwitchover, type SwitchoverResult } from '../support/switchover.ts';
import { WriteGate } from '../src/services/write-gate/write-gate.ts';

async function gateCost(): Promise<{ plain: number; gated: number }> {
  const ops = 200_000;
  const commit = async () => 1;
  let started = performance.now();
  for (let i = 0; i < ops; i += 1) await commit();
  const plain = ops / ((performance.now() - started) / 1000);
  const gate = new WriteGate(() => null);
  started = performance.now();
  for (let i = 0; i < ops; i += 1) {
    const ticket = gate.admit();
    await gate.within(ticket, () => gate.commit(commit));
    gate.release(ticket);
  }
  const gated = ops / ((performance.now() - started) / 1000);
  return { plain, gated };
}

async function main(): Promise<void> {
  const cost = await gateCost();
  console.log('\nWrite barrier on the write path (in-process)');
  console.log(`  commit without the gate   ${cost.plain.toFixed(0).padStart(10)} ops/s   baseline`);
  console.log(
    `  admit + fenced commit     ${cost.gated.toFixed(0).padStart(10)} ops/s   ${((cost.gated / cost.plain) * 100).toFixed(1)}%  (${(1e6 / cost.gated - 1e6 / cost.plain).toFixed(2)} µs per write)`,
  );

  const levels = (process.env.BENCH_FAILOVER_CONCURRENCY ?? '0,8,32').split(',').map(Number);
  const results: SwitchoverResult[] = [];
  for (const concurrency of levels) results.push(await plannedSwitchover({ concurrency, uploadBytes: 4096 }));
  const base = results[0]!;
  console.log('\nPlanned switchover (two instances, synchronous replica): read-only on → promote → switch → read-only off');
  console.log(
    '  uploads  enable ms (vs N=0)  in flight  waited  failed  promote ms  switch ms  disable ms  unavailable ms  acked  lost  on old primary  old primary fenced',
  );
  for (const r of results) {
    const ratio = base.enableMs > 0 ? `${(r.enableMs / base.enableMs).toFixed(2)}x` : '-';
    console.log(
      `  ${String(r.concurrency).padStart(7)}  ${String(r.enableMs).padStart(9)} (${ratio.padStart(5)})  ${String(r.writesAtEnable.inFlight).padStart(9)}  ${String(r.writesAtEnable.waitedFor).padStart(6)}  ${String(r.writesAtEnable.failing).padStart(6)}  ${String(r.promoteMs).padStart(10)}  ${String(r.switchMs).padStart(9)}  ${String(r.disableMs).padStart(10)}  ${String(Number.isNaN(r.unavailableMs) ? '-' : r.unavailableMs).padStart(14)}  ${String(r.acked).padStart(5)}  ${String(r.missingOnNewPrimary).padStart(4)}  ${String(r.ackedOnOldPrimaryAfterEnable).padStart(15)}  ${r.oldPrimaryFenced}`,
    );
  }
  for (const r of results) console.log(`  uploads refused with ${r.concurrency} in flight: ${JSON.stringify(r.refused)}`);
  for (const r of results)
    console.log(
      `  ${r.concurrency} in flight, last upload acknowledged before → first after: ${Number.isNaN(r.ackGapMs) ? '-' : `${r.ackGapMs} ms`}; waits for every instance to apply (ms): enable ${r.breakdown.enableWaitMs}, promote ${r.breakdown.promoteWaitMs}, switch ${r.breakdown.switchWaitMs}, disable ${r.breakdown.disableWaitMs}; promotion timings ${JSON.stringify(r.breakdown.promote)}`,
    );
  console.log(
    '  goal: enable + promote + switch + disable under 1000 ms of write unavailability with uploads in flight (previous drill, no barrier: 500 ms)',
  );
  const bad = results.filter((r) => r.missingOnNewPrimary > 0 || r.ackedOnOldPrimaryAfterEnable > 0 || !r.oldPrimaryFenced);
  if (bad.length > 0) {
    console.log('FAILED: an acknowledged upload was lost or landed on the old primary');
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
