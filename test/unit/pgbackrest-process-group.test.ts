// pgBackRest runs in a process group of its own: a timeout stops it and everything it started
// (not only the direct child) within the bound, and so does the end of the worker.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgBackRestCli, stopAllPgBackRest } from '../../src/services/backup/pgbackrest.ts';

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

describe('pgBackRest in its own process group', () => {
  let dir: string;
  let bin: string;
  const grandchild = () => Number(readFileSync(join(dir, 'pid'), 'utf8'));
  beforeEach(() => {
    // Each test counts only its own runs: what an earlier test's stopped run left is cleared.
    stopAllPgBackRest('SIGKILL');
    dir = mkdtempSync(join(tmpdir(), 'sav3-pgbr-group-'));
    bin = join(dir, 'pgbackrest');
    // Like pgBackRest with its local processes: a child that ignores SIGTERM's end of its parent.
    writeFileSync(bin, `#!/bin/sh\nsleep 60 &\necho $! > ${join(dir, 'pid')}\nwait\n`);
    chmodSync(bin, 0o755);
  });
  afterEach(() => {
    try {
      process.kill(grandchild(), 'SIGKILL');
    } catch {
      // gone, as it should be
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('a timeout of 2 s answers within the bound and stops the whole group', async () => {
    const cli = new PgBackRestCli({ bin, stanza: 'main' });
    const started = Date.now();
    await expect(cli.backup('full', 2000)).rejects.toMatchObject({ code: 'pgbackrest_timeout' });
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(3000); // before: 4 s (only the direct child was killed)
    expect(await until(() => !alive(grandchild()), 2000)).toBe(true);
  });

  it('the end of the worker (stopAllPgBackRest) stops a run and what it started', async () => {
    const cli = new PgBackRestCli({ bin, stanza: 'main' });
    const run = cli.backup('full', 60_000);
    expect(
      await until(() => {
        try {
          return alive(grandchild());
        } catch {
          return false;
        }
      }, 3000),
    ).toBe(true);
    expect(stopAllPgBackRest()).toBe(1);
    await expect(run).rejects.toMatchObject({ code: 'pgbackrest_failed' });
    expect(await until(() => !alive(grandchild()), 2000)).toBe(true);
  });
});

describe('pgBackRest output beyond the bound', () => {
  it('fails the run (never a cut answer taken for whole) and stops the group', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sav3-pgbr-output-'));
    try {
      const bin = join(dir, 'pgbackrest');
      // Like `info --output=json` of a huge repository: far more than the bound, then more after a pause.
      writeFileSync(bin, `#!/bin/sh\necho $$ > ${join(dir, 'pid')}\nhead -c 300000 /dev/zero | tr '\\\\0' x\nsleep 30\necho ']'\n`);
      chmodSync(bin, 0o755);
      const cli = new PgBackRestCli({ bin, stanza: 'main', maxOutputBytes: 100_000 });
      const started = Date.now();
      await expect(cli.info(20_000)).rejects.toMatchObject({
        code: 'pgbackrest_failed',
        message: expect.stringContaining('more than 100000 bytes'),
      });
      expect(Date.now() - started).toBeLessThan(5000);
      const pid = Number(readFileSync(join(dir, 'pid'), 'utf8'));
      expect(await until(() => !alive(pid), 3000)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
