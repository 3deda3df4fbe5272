// A pgBackRest repository in a temp dir, for tests and drills of the rebuild scripts: WAL archiving
// settings for each node, stanza creation and full backups. Runs as the `postgres` user (as root it
// would make the repository root-only).
import { execFile } from 'node:child_process';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PgNode } from './pg-cluster.ts';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;

export interface PgBackRestRepo {
  config: string;
  stanza: string;
  /** postgresql.conf lines that archive this node's WAL into the repository. */
  archiveSettings(dataDir: string): string[];
  stanzaCreate(node: PgNode, socketDir: string): Promise<void>;
  /** A full backup of `node` (a primary); returns its label. */
  backup(node: PgNode, socketDir: string): Promise<string>;
}

export async function pgbackrest(args: string[]): Promise<string> {
  const command = asRoot ? 'runuser' : 'pgbackrest';
  const argv = asRoot ? ['-u', 'postgres', '--', 'pgbackrest', ...args] : args;
  const { stdout } = await run(command, argv, { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** `dir` must be owned by postgres (a cluster's dir is). */
export function createPgBackRestRepo(dir: string, stanza = 'sav3'): PgBackRestRepo {
  const root = join(dir, 'pgbackrest');
  for (const sub of ['', 'repo', 'log', 'lock', 'spool']) {
    mkdirSync(join(root, sub), { recursive: true, mode: 0o700 });
    if (asRoot) chownSync(join(root, sub), 101, 104);
  }
  const config = join(root, 'pgbackrest.conf');
  writeFileSync(
    config,
    [
      '[global]',
      `repo1-path=${join(root, 'repo')}`,
      `log-path=${join(root, 'log')}`,
      `lock-path=${join(root, 'lock')}`,
      `spool-path=${join(root, 'spool')}`,
      'log-level-console=warn',
      'log-level-file=off',
      'compress-type=none',
      'start-fast=y',
      'archive-timeout=30',
      `[${stanza}]`,
      '',
    ].join('\n'),
  );
  if (asRoot) chownSync(config, 101, 104);
  const pgOptions = (node: PgNode, socketDir: string) => [
    `--config=${config}`,
    `--stanza=${stanza}`,
    `--pg1-path=${node.dataDir}`,
    `--pg1-port=${node.port}`,
    `--pg1-socket-path=${socketDir}`,
  ];
  return {
    config,
    stanza,
    archiveSettings: (dataDir) => [
      'archive_mode = on',
      `archive_command = 'pgbackrest --config=${config} --stanza=${stanza} --pg1-path=${dataDir} archive-push %p'`,
    ],
    async stanzaCreate(node, socketDir) {
      await pgbackrest([...pgOptions(node, socketDir), 'stanza-create']);
    },
    async backup(node, socketDir) {
      await pgbackrest([...pgOptions(node, socketDir), '--type=full', 'backup']);
      const info = JSON.parse(await pgbackrest([`--config=${config}`, `--stanza=${stanza}`, '--output=json', 'info'])) as {
        backup: { label: string }[];
      }[];
      return info[0]!.backup.at(-1)!.label;
    },
  };
}
