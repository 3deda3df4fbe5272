import { execFile } from 'node:child_process';

/** Runs a tool as `osUser` when this process is root (PostgreSQL and pgBackRest refuse root). */
export function runAs(
  osUser: string,
  file: string,
  args: string[],
  options: { timeoutMs: number; env?: NodeJS.ProcessEnv },
): Promise<{ stdout: string; stderr: string }> {
  const root = process.getuid?.() === 0;
  const [command, argv] = root ? ['runuser', ['-u', osUser, '--', file, ...args]] : [file, args];
  return new Promise((resolve, reject) => {
    execFile(
      command,
      argv,
      { timeout: options.timeoutMs, maxBuffer: 64 * 1024 * 1024, env: options.env ?? process.env },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as Error & { stderr?: string; stdout?: string };
          e.stderr = String(stderr);
          e.stdout = String(stdout);
          e.message = `${file.split('/').pop()} failed: ${String(stderr).trim().split('\n').slice(-3).join(' ') || e.message}`.slice(
            0,
            600,
          );
          return reject(e);
        }
        resolve({ stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** Whether this process runs as root (then files it creates for PostgreSQL are handed over). */
export const isRoot = (): boolean => process.getuid?.() === 0;
