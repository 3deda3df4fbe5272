import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const SCRIPTS = join(__dirname, '..', '..', 'scripts', 'dr');

/** Runs a runbook script with only PATH and the given environment; never throws on a non-zero exit. */
export async function script(name: string, args: string[], env: Record<string, string>) {
  try {
    const { stdout, stderr } = await run('bash', [join(SCRIPTS, name), ...args], { env: { PATH: process.env.PATH ?? '', ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
