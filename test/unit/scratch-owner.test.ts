import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BOOT_ID, cleanLeftovers, scratchName } from '../../src/services/backup/scratch-cluster.ts';

const deps = { pgBin: '/usr/lib/postgresql/15/bin', osUser: 'postgres' };

describe('scratch leftovers: the owner is the pid and the boot of the worker, not the pid alone', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'sav3-scratch-owner-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("a predecessor with this worker's pid (PID 1 in a container) is recognised and removed; this worker's own and another live worker's are kept", async () => {
    const other = BOOT_ID === 'a'.repeat(16) ? 'b'.repeat(16) : 'a'.repeat(16);
    const names = {
      predecessor: `v-${process.pid}.${other}-crashed0`,
      legacy: `v-${process.pid}-legacy00`,
      mine: scratchName('running0'),
      liveOther: `v-${process.ppid}.${other}-running1`,
    };
    for (const n of Object.values(names)) mkdirSync(join(root, n));
    const removed = (await cleanLeftovers(root, deps)).map((d) => d.slice(root.length + 1)).sort();
    expect(removed).toEqual([names.legacy, names.predecessor].sort());
    expect(readdirSync(root).sort()).toEqual([names.liveOther, names.mine].sort());
  });

  it('every process start has a boot id of its own in the names it makes', () => {
    expect(BOOT_ID).toMatch(/^[0-9a-f]{16}$/);
    expect(scratchName('x')).toBe(`v-${process.pid}.${BOOT_ID}-x`);
  });
});
