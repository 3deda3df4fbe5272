import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  chownSync,
  appendFileSync,
  writeFileSync,
  realpathSync,
} from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { isRoot, runAs } from './os-command.ts';

/** A restore into this path is refused: it is not a scratch directory, or a live cluster uses it. */
export class UnsafeRestorePathError extends Error {}

/**
 * Refuses any path outside the scratch root, the root itself, any directory that already holds a
 * data directory (PG_VERSION) or a running server (postmaster.pid), and the live data directories.
 */
export function assertScratchPath(path: string, root: string, liveDataDirs: readonly string[]): void {
  const target = resolve(path);
  const base = resolve(root);
  if (!target.startsWith(base + sep)) throw new UnsafeRestorePathError(`${target} is not inside the scratch directory ${base}`);
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  for (const live of liveDataDirs) {
    const l = real(live);
    const t = existsSync(target) ? real(target) : target;
    if (t === l || t.startsWith(l + sep) || l.startsWith(t + sep))
      throw new UnsafeRestorePathError(`${target} is (or contains) the live data directory ${live}`);
  }
  if (existsSync(join(target, 'postmaster.pid'))) throw new UnsafeRestorePathError(`${target} holds a running server (postmaster.pid)`);
  if (existsSync(join(target, 'PG_VERSION'))) throw new UnsafeRestorePathError(`${target} already holds a data directory`);
  if (existsSync(target) && readdirSync(target).length > 0) throw new UnsafeRestorePathError(`${target} is not empty`);
}

export function uidOf(user: string): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', user]).toString().trim()),
    gid: Number(execFileSync('id', ['-g', user]).toString().trim()),
  };
}

/** A restored cluster in a scratch directory: started on a spare port, socket-only, archiving off. */
export class ScratchCluster {
  readonly dataDir: string;
  readonly port: number;

  constructor(
    readonly dir: string,
    port: number,
    private readonly deps: { pgBin: string; osUser: string },
  ) {
    this.dataDir = join(dir, 'data');
    this.port = port;
  }

  static prepare(
    root: string,
    name: string,
    port: number,
    deps: { pgBin: string; osUser: string; liveDataDirs: readonly string[] },
  ): ScratchCluster {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    const dir = join(root, name);
    assertScratchPath(dir, root, deps.liveDataDirs);
    mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 });
    if (isRoot()) {
      const { uid, gid } = uidOf(deps.osUser);
      for (const p of [root, dir, join(dir, 'data')]) chownSync(p, uid, gid);
    }
    return new ScratchCluster(dir, port, deps);
  }

  /** After the restore: no TCP, a private socket, trust only there, never archive, never stream. */
  configure(): void {
    appendFileSync(
      join(this.dataDir, 'postgresql.auto.conf'),
      [
        '',
        '# validation restore (scratch cluster)',
        `port = ${this.port}`,
        "listen_addresses = ''",
        `unix_socket_directories = '${this.dir}'`,
        "archive_mode = 'off'",
        "primary_conninfo = ''",
        'hot_standby = on',
        "log_destination = 'stderr'",
        'logging_collector = off',
        '',
      ].join('\n'),
    );
    writeFileSync(join(this.dataDir, 'pg_hba.conf'), 'local all all trust\n');
    rmSync(join(this.dataDir, 'standby.signal'), { force: true });
    rmSync(join(this.dataDir, 'postmaster.pid'), { force: true });
    if (isRoot()) {
      const { uid, gid } = uidOf(this.deps.osUser);
      for (const f of ['postgresql.auto.conf', 'pg_hba.conf']) chownSync(join(this.dataDir, f), uid, gid);
    }
  }

  url(database: string, user: string): string {
    return `postgresql://${encodeURIComponent(user)}@/${encodeURIComponent(database)}?host=${encodeURIComponent(this.dir)}&port=${this.port}`;
  }

  async start(timeoutMs: number): Promise<void> {
    // -w waits only until connections are accepted; recovery may go on (hot standby).
    await runAs(
      this.deps.osUser,
      join(this.deps.pgBin, 'pg_ctl'),
      ['-D', this.dataDir, '-l', join(this.dir, 'server.log'), '-w', '-t', String(Math.ceil(timeoutMs / 1000)), 'start'],
      { timeoutMs: timeoutMs + 5000 },
    );
  }

  log(): string {
    try {
      return readFileSync(join(this.dir, 'server.log'), 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      return '';
    }
  }

  bytes(): number {
    try {
      return Number(execFileSync('du', ['-sb', this.dataDir]).toString().split('\t')[0]);
    } catch {
      return 0;
    }
  }

  /** Stops the server (immediately: it is thrown away) and deletes the directory. */
  async destroy(): Promise<void> {
    if (existsSync(join(this.dataDir, 'postmaster.pid'))) {
      await runAs(this.deps.osUser, join(this.deps.pgBin, 'pg_ctl'), ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', '30', 'stop'], {
        timeoutMs: 40_000,
      }).catch(() => undefined);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * This process's boot id: random per start. A pid alone does not tell a worker from its
 * predecessor: in a container the worker is always PID 1, so a restarted worker has the pid of the
 * one that crashed. Names carry both: `v-<pid>.<boot id>-<suffix>`.
 */
export const BOOT_ID = randomBytes(8).toString('hex');

export function scratchName(suffix: string): string {
  return `v-${process.pid}.${BOOT_ID}-${suffix}`;
}

/**
 * Leftovers of a worker that died mid-validation: any scratch cluster whose worker is gone is
 * stopped and deleted: one of a dead pid, or of this pid but another boot (this process's
 * predecessor with the same pid; also the older `v-<pid>-…` names without a boot id, which this
 * process never makes). Those of this process and of other live workers on this host are kept.
 */
export async function cleanLeftovers(root: string, deps: { pgBin: string; osUser: string }): Promise<string[]> {
  if (!existsSync(root)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(root)) {
    const m = /^v-(\d+)(?:\.([0-9a-f]{16}))?-/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    const boot = m[2];
    if (pid === process.pid && boot === BOOT_ID) continue; // ours
    if (pid !== process.pid && alive(pid)) continue; // another live worker's
    const dir = join(root, name);
    if (!statSync(dir).isDirectory()) continue;
    const cluster = new ScratchCluster(dir, 0, deps);
    await cluster.destroy();
    removed.push(dir);
  }
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
