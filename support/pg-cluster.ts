// A real PostgreSQL primary and streaming replica on spare ports in a temp dir, for tests, the
// drill and the local stack. The server refuses to run as root, so as root every command runs as
// the `postgres` user.
import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './common.ts';

const run = promisify(execFile);
const BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface PgNode {
  port: number;
  dataDir: string;
  url(database?: string): string;
  start(): Promise<void>;
  /** `immediate` is a crash: no checkpoint, no goodbye to the replica. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
}

export interface PgCluster {
  primary: PgNode;
  replica: PgNode;
  dir: string;
  /** Stops both servers and removes the directory; safe to call twice. */
  destroy(): Promise<void>;
}

const asRoot = process.getuid?.() === 0;

async function pg(tool: string, args: string[]): Promise<string> {
  const command = asRoot ? 'runuser' : join(BIN, tool);
  const argv = asRoot ? ['-u', 'postgres', '--', join(BIN, tool), ...args] : args;
  const { stdout } = await run(command, argv, { env: { ...process.env, PGTZ: 'UTC' }, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

function node(dataDir: string, port: number, dir: string): PgNode {
  return {
    port,
    dataDir,
    url: (database = 'postgres') => `postgresql://postgres@127.0.0.1:${port}/${database}`,
    async start() {
      const log = join(dir, `${port}.log`);
      const start = () => pg('pg_ctl', ['-D', dataDir, '-l', log, '-w', '-t', '30', 'start']);
      try {
        await start();
      } catch {
        // Once more after a pause (a loaded machine), then fail with what the server logged: the
        // temp dir, and its log, are gone after the test.
        await new Promise((r) => setTimeout(r, 1000));
        await start().catch((err: unknown) => {
          const tail = (() => {
            try {
              return readFileSync(log, 'utf8').trim().split('\n').slice(-8).join('\n');
            } catch {
              return '(no server log)';
            }
          })();
          throw new Error(`PostgreSQL on port ${port} did not start: ${err instanceof Error ? err.message : String(err)}\n${tail}`);
        });
      }
    },
    async stop(mode = 'fast') {
      await pg('pg_ctl', ['-D', dataDir, '-m', mode, '-w', '-t', '30', 'stop']).catch(() => undefined);
    },
  };
}

const live = new Set<PgCluster>();
process.once('exit', () => {
  // Last resort if a test process dies without cleaning up: stop servers synchronously.
  for (const cluster of live) {
    for (const n of [cluster.primary, cluster.replica]) {
      try {
        execFileSync(
          asRoot ? 'runuser' : join(BIN, 'pg_ctl'),
          [...(asRoot ? ['-u', 'postgres', '--', join(BIN, 'pg_ctl')] : []), '-D', n.dataDir, '-m', 'immediate', 'stop'],
          { stdio: 'ignore' },
        );
      } catch {
        // already stopped
      }
    }
    rmSync(cluster.dir, { recursive: true, force: true });
  }
});

export interface PgClusterOptions {
  dir?: string;
  /**
   * The primary waits for the replica to flush every commit (synchronous_standby_names set on the
   * primary only, after the base backup, so the promoted replica does not wait for a standby it
   * lacks). Then no acknowledged commit is lost when the primary dies.
   */
  synchronous?: boolean;
  /** More postgresql.conf lines for a node (e.g. WAL archiving), given its data directory. */
  settings?: (dataDir: string) => string[];
}

export async function startPgCluster(options: PgClusterOptions = {}): Promise<PgCluster> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'sav3-pg-'));
  chmodSync(dir, 0o700);
  if (asRoot) chownSync(dir, 101, 104);
  const [primaryPort, replicaPort] = [await freePort(), await freePort()];
  const primaryDir = join(dir, 'primary');
  const replicaDir = join(dir, 'replica');
  const settings = (port: number) =>
    [
      `port = ${port}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${dir}'`,
      'wal_level = replica',
      'max_wal_senders = 5',
      'hot_standby = on',
      'wal_keep_size = 64MB',
      'fsync = off',
      'synchronous_commit = on',
      'shared_buffers = 32MB',
      'max_connections = 60',
      'wal_receiver_status_interval = 1s',
      'hot_standby_feedback = on',
      // pg_rewind needs it to turn an old primary into a standby of the new one.
      'wal_log_hints = on',
    ].join('\n');
  const extra = (dataDir: string) => (options.settings?.(dataDir) ?? []).join('\n');
  await pg('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync']);
  appendFileSync(join(primaryDir, 'postgresql.conf'), `\n${settings(primaryPort)}\n${extra(primaryDir)}\n`);
  appendFileSync(join(primaryDir, 'pg_hba.conf'), '\nhost replication all 127.0.0.1/32 trust\n');
  const cluster: PgCluster = {
    dir,
    primary: node(primaryDir, primaryPort, dir),
    replica: node(replicaDir, replicaPort, dir),
    async destroy() {
      live.delete(cluster);
      await Promise.all([cluster.replica.stop('immediate'), cluster.primary.stop('immediate')]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  live.add(cluster);
  try {
    await cluster.primary.start();
    await pg('pg_basebackup', [
      '-h',
      '127.0.0.1',
      '-p',
      String(primaryPort),
      '-U',
      'postgres',
      '-D',
      replicaDir,
      '-R',
      '-X',
      'stream',
      '--no-sync',
    ]);
    writeFileSync(join(dir, 'replica.conf'), '');
    appendFileSync(join(replicaDir, 'postgresql.conf'), `\nport = ${replicaPort}\n${extra(replicaDir)}\n`);
    await cluster.replica.start();
    if (options.synchronous) {
      await pg('psql', [
        '-h',
        '127.0.0.1',
        '-p',
        String(primaryPort),
        '-U',
        'postgres',
        '-d',
        'postgres',
        '-qAt',
        '-c',
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        '-c',
        'SELECT pg_reload_conf()',
      ]);
    }
    return cluster;
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
}
