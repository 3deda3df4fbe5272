import { runTorture } from '../support/media-torture.ts';

const SECONDS = Number(process.env.TORTURE_SECONDS ?? 35);

describe('media torture: races, overwrites, crashes and failovers', () => {
  it(
    `${SECONDS} s of writers, deleters and readers on two instances while S3 servers, Redis, PostgreSQL and one instance die and return: zero violations`,
    async () => {
      const report = await runTorture({ seconds: SECONDS });
      console.log(JSON.stringify(report, null, 2));
      expect(report.violations).toEqual([]);
      // The run must have exercised what it claims to.
      expect(report.ops['put:ack'] ?? 0).toBeGreaterThan(20);
      expect(report.ops['delete:ack'] ?? 0).toBeGreaterThan(3);
      expect(Object.keys(report.faults).sort()).toEqual(['backup', 'instance', 'postgres', 'primary', 'redis', 'switch', 'sync']);
      expect(report.versionsChecked).toBeGreaterThan(0);
      expect(report.objectsChecked).toBeGreaterThan(0);
    },
    (SECONDS + 120) * 1000,
  );
});
