import { FAULTS, runTorture, tortureSeed, type Fault } from '../support/media-torture.ts';

const SECONDS = Number(process.env.TORTURE_SECONDS ?? 35);
// TORTURE_SEED replays a run (every failure message names its seed); TORTURE_FAULTS narrows the
// fault mix (comma-separated, e.g. "primary,postgres,switch") to chase one combination.
const SEED = tortureSeed();
const MIX = (process.env.TORTURE_FAULTS ?? '').split(',').filter(Boolean) as Fault[];
for (const f of MIX) if (!FAULTS.includes(f)) throw new Error(`TORTURE_FAULTS: unknown fault ${f} (known: ${FAULTS.join(',')})`);

describe('media torture: races, overwrites, crashes and failovers', () => {
  it(
    `${SECONDS} s of writers, deleters and readers on two instances while S3 servers, Redis, PostgreSQL and one instance die and return: zero violations (TORTURE_SEED=${SEED})`,
    async () => {
      const report = await runTorture({ seconds: SECONDS, seed: SEED, faults: MIX.length > 0 ? MIX : undefined });
      console.log(JSON.stringify(report, null, 2));
      expect(report.violations).toEqual([]);
      // The run must have exercised what it claims to.
      expect(report.ops['put:ack'] ?? 0).toBeGreaterThan(20);
      expect(report.ops['delete:ack'] ?? 0).toBeGreaterThan(3);
      expect(Object.keys(report.faults).sort()).toEqual([...new Set(report.faultMix)].sort());
      expect(report.versionsChecked).toBeGreaterThan(0);
      expect(report.objectsChecked).toBeGreaterThan(0);
    },
    (SECONDS + 120) * 1000,
  );
});
