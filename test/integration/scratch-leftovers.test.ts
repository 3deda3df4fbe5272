import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanLeftovers, scratchName, uidOf } from '../../src/services/backup/scratch-cluster.ts';
import { runAs } from '../../src/services/backup/os-command.ts';

const BIN = '/usr/lib/postgresql/15/bin';

/** Alive and not a zombie waiting for a parent that does not reap (as in some containers). */
function running(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

describe('scratch clusters left by a worker that died mid-validation', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'sav3-leftovers-'));
    if (process.getuid?.() === 0) {
      const { uid, gid } = uidOf('postgres');
      chownSync(root, uid, gid);
    }
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("a running scratch server of a dead worker is stopped and its directory deleted; a live worker's is kept", async () => {
    const dir = join(root, `v-${await deadPid()}-deadbeef`);
    const mine = join(root, scratchName('live0000'));
    for (const d of [dir, mine]) {
      mkdirSync(d, { mode: 0o700 });
      if (process.getuid?.() === 0) chownSync(d, uidOf('postgres').uid, uidOf('postgres').gid);
    }
    await runAs('postgres', join(BIN, 'initdb'), ['-D', join(dir, 'data'), '-U', 'postgres', '--auth=trust', '--no-sync'], {
      timeoutMs: 60_000,
    });
    await runAs(
      'postgres',
      join(BIN, 'pg_ctl'),
      [
        '-D',
        join(dir, 'data'),
        '-o',
        `-c listen_addresses='' -c unix_socket_directories='${dir}' -c port=5999`,
        '-l',
        join(dir, 'server.log'),
        '-w',
        'start',
      ],
      { timeoutMs: 60_000 },
    );
    const pid = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    expect(running(pid)).toBe(true);

    const removed = await cleanLeftovers(root, { pgBin: BIN, osUser: 'postgres' });
    expect(removed).toEqual([dir]);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(mine)).toBe(true); // this process is alive: its scratch directory stays
    expect(running(pid)).toBe(false); // the orphaned server is gone
  }, 60_000);
});
