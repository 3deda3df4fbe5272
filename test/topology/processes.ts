// Long-running processes of the topology test, each logging to a file of its own; commands that
// must run as `postgres` (PostgreSQL, pgBackRest, PgBouncer) go through runuser.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;

export interface RunResult {
  code: number;
  out: string;
}

function argv(command: string, args: string[], asPostgres: boolean): [string, string[]] {
  return asPostgres && asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

/** Runs a command to its end; never throws (the exit code is the answer). */
export function run(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; asPostgres?: boolean; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  const [cmd, list] = argv(command, args, options.asPostgres ?? false);
  return new Promise((resolve) => {
    execFile(
      cmd,
      list,
      { env: { ...process.env, ...options.env }, timeout: options.timeoutMs ?? 60_000, cwd: options.cwd, maxBuffer: 8 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

export class Processes {
  private readonly children = new Map<string, ChildProcess>();
  private readonly logs: string;

  constructor(dir: string) {
    this.logs = join(dir, 'logs');
    mkdirSync(this.logs, { recursive: true });
    // Commands run as postgres write their own log files here too (pg_ctl -l).
    chmodSync(this.logs, 0o777);
  }

  start(
    name: string,
    command: string,
    args: string[],
    options: { env?: Record<string, string>; asPostgres?: boolean; cwd?: string } = {},
  ): ChildProcess {
    const [cmd, list] = argv(command, args, options.asPostgres ?? false);
    const fd = openSync(join(this.logs, `${name}.log`), 'a');
    const child = spawn(cmd, list, { env: { ...process.env, ...options.env }, stdio: ['ignore', fd, fd], cwd: options.cwd });
    closeSync(fd);
    child.on('error', () => undefined);
    this.children.set(name, child);
    return child;
  }

  running(name: string): boolean {
    const child = this.children.get(name);
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  exited(name: string): Promise<number | null> {
    const child = this.children.get(name);
    if (!child || !this.running(name)) return Promise.resolve(child?.exitCode ?? null);
    return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Signals the process and waits for it to exit (SIGKILL after `graceMs`). */
  async stop(name: string, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    const child = this.children.get(name);
    if (!child || !this.running(name)) return;
    const exited = this.exited(name);
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.children.keys()].reverse().map((name) => this.stop(name, 'SIGTERM', 5000)));
  }

  log(name: string): string {
    try {
      return readFileSync(join(this.logs, `${name}.log`), 'utf8');
    } catch {
      return '';
    }
  }
}
