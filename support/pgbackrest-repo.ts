// A pgBackRest repository in a temp dir for a test cluster's primary, with a real archive_command.
// Everything runs as `postgres` (pgBackRest must never write its repository as root).
import { execFile } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync, appendFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PgNode } from './pg-cluster.ts';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;

export interface PgBackRestRepo {
  dir: string;
  configPath: string;
  stanza: string;
  /** Runs pgbackrest with this repository's config (as postgres). */
  exec(args: string[]): Promise<string>;
  env: Record<string, string>;
  destroy(): void;
}

export async function createPgBackRestRepo(
  primary: PgNode,
  socketDir: string,
  options: { stanza?: string; extraGlobal?: string[] } = {},
): Promise<PgBackRestRepo> {
  const stanza = options.stanza ?? 'main';
  const dir = mkdtempSync(join(tmpdir(), 'sav3-pgbr-'));
  chmodSync(dir, 0o700);
  const configPath = join(dir, 'pgbackrest.conf');
  writeFileSync(
    configPath,
    [
      '[global]',
      `repo1-path=${join(dir, 'repo')}`,
      `log-path=${join(dir, 'log')}`,
      `lock-path=${join(dir, 'lock')}`,
      `spool-path=${join(dir, 'spool')}`,
      'log-level-file=off',
      'log-level-console=warn',
      'compress-type=lz4',
      'repo1-retention-full=10',
      'start-fast=y',
      'archive-timeout=30',
      ...(options.extraGlobal ?? []),
      '',
      `[${stanza}]`,
      `pg1-path=${primary.dataDir}`,
      `pg1-port=${primary.port}`,
      `pg1-socket-path=${socketDir}`,
      '',
    ].join('\n'),
  );
  if (asRoot) {
    chownSync(dir, 101, 104);
    chownSync(configPath, 101, 104);
  }
  const exec = async (args: string[]) => {
    const argv = [`--config=${configPath}`, `--stanza=${stanza}`, ...args];
    const { stdout } = await run(asRoot ? 'runuser' : 'pgbackrest', asRoot ? ['-u', 'postgres', '--', 'pgbackrest', ...argv] : argv, {
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  };
  appendFileSync(
    join(primary.dataDir, 'postgresql.conf'),
    `\narchive_mode = on\narchive_command = 'pgbackrest --config=${configPath} --stanza=${stanza} archive-push %p'\n`,
  );
  await primary.stop('fast');
  await primary.start();
  await exec(['stanza-create']);
  return {
    dir,
    configPath,
    stanza,
    exec,
    env: { PGBACKREST_STANZA: stanza, PGBACKREST_CONFIG: configPath },
    destroy: () => rmSync(dir, { recursive: true, force: true }),
  };
}
