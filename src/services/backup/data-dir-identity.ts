import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { RestorePlanError } from './database-restore.ts';
import { runAs } from './os-command.ts';

/** postmaster.pid of `pgData` names a live process (`EPERM`: alive, another user's). */
export function postmasterAlive(pgData: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(join(pgData, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What pgBackRest leaves in a data directory while it restores into it: it writes `backup.manifest`
 * there first (so that a rerun with --delta knows the directory is a restore target even without
 * PG_VERSION), removes `global/pg_control` (so that a half-restored cluster cannot start), and
 * removes the manifest again at the end. Both seen together: a restore interrupted halfway.
 */
export interface InterruptedRestore {
  label: string | null;
  systemId: string | null;
}

/** The interrupted pgBackRest restore `pgData` holds (no control file, pgBackRest's manifest), or null. */
export function interruptedRestore(pgData: string): InterruptedRestore | null {
  if (existsSync(join(pgData, 'global', 'pg_control'))) return null;
  let text: string;
  try {
    text = readFileSync(join(pgData, 'backup.manifest'), 'utf8');
  } catch {
    return null;
  }
  // An INI file of pgBackRest's: [backup] backup-label="…", [backup:db] db-system-id=….
  if (!/^\[backup\]$/m.test(text) || !/^\[backup:db\]$/m.test(text)) return null;
  return {
    label: /^backup-label="([^"\n]*)"$/m.exec(text)?.[1] ?? null,
    systemId: /^db-system-id=(\d+)$/m.exec(text)?.[1] ?? null,
  };
}

/**
 * What the data directory holds after a restore failed before PostgreSQL started: its own data
 * (the control file is in place), an interrupted pgBackRest restore (PostgreSQL cannot start on
 * it), or something else without a control file; `unreadable` when this process cannot tell.
 */
export function dataDirState(pgData: string): 'intact' | 'interrupted_restore' | 'no_control_file' | 'unreadable' {
  try {
    readdirSync(pgData);
  } catch {
    return 'unreadable';
  }
  if (existsSync(join(pgData, 'global', 'pg_control'))) return 'intact';
  return interruptedRestore(pgData) ? 'interrupted_restore' : 'no_control_file';
}

const real = (path: string) => {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
};

/** What DATABASE_URL's server says about itself, or null when it does not answer within 5 s. */
async function serverIdentity(databaseUrl: string): Promise<{ dataDirectory: string; systemId: string } | null> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000, query_timeout: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch {
    return null;
  }
  try {
    const { rows } = await client.query<{ dir: string; id: string }>(
      "SELECT current_setting('data_directory') AS dir, (SELECT system_identifier::text FROM pg_control_system()) AS id",
    );
    return { dataDirectory: rows[0]!.dir, systemId: rows[0]!.id };
  } catch (err) {
    throw new RestorePlanError(
      `the server of DATABASE_URL answered but would not say its data directory and system identifier (${(err as Error).message.split('\n')[0]}): connect as a superuser (or pg_read_all_settings); nothing was changed`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Proves `pgData` is the data directory of the server DATABASE_URL names before the restore stops
 * and replaces it (a replica's directory given by mistake would be overwritten and promoted: two
 * primaries). The server answers: its `data_directory` must be `pgData` (symlinks resolved) and its
 * system identifier the one in `pgData`'s control file. It does not: the control file's identifier
 * must be the backup stanza's, no postmaster may run there (that server is not DATABASE_URL's), and
 * a standby (standby.signal) is refused unless `allowStandby`. Throws a RestorePlanError saying why;
 * returns what was proved.
 */
export async function proveDataDirectory(options: {
  pgData: string;
  databaseUrl: string;
  pgBin: string;
  osUser: string;
  stanzaSystemId: string | null | undefined;
  allowStandby: boolean;
}): Promise<string> {
  const { pgData, databaseUrl } = options;
  const dir = real(pgData);
  const refuse = (why: string) => new RestorePlanError(`refusing: ${why}; nothing was changed`);
  if (!existsSync(join(dir, 'global', 'pg_control'))) {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') entries = [];
      else throw refuse(`${pgData} cannot be read (${(err as Error).message})`);
    }
    if (entries.length > 0) {
      // A restore into it was interrupted (this script's, killed or failed halfway): it is this
      // stanza's restore target when pgBackRest's manifest there names the stanza's cluster.
      const interrupted = interruptedRestore(dir);
      if (!interrupted)
        throw refuse(
          `${pgData} is not empty and holds no PostgreSQL control file (global/pg_control) nor an interrupted pgBackRest restore`,
        );
      if (!options.stanzaSystemId || interrupted.systemId !== options.stanzaSystemId)
        throw refuse(
          `${pgData} holds an interrupted pgBackRest restore of system identifier ${interrupted.systemId ?? 'unknown'}, the backup stanza has ${options.stanzaSystemId ?? 'none'}: it belongs to another cluster`,
        );
      if (postmasterAlive(dir)) throw refuse(`a PostgreSQL server runs on ${pgData}`);
      if (await serverIdentity(databaseUrl))
        throw refuse(
          `${pgData} holds an interrupted pgBackRest restore but the server of DATABASE_URL answers: it runs on another data directory`,
        );
      return `${pgData} holds an interrupted pgBackRest restore (backup ${interrupted.label ?? 'unknown'}, system identifier ${interrupted.systemId}; no global/pg_control: PostgreSQL cannot start on it) and the server of DATABASE_URL does not answer`;
    }
    if (await serverIdentity(databaseUrl))
      throw refuse(`${pgData} is empty but the server of DATABASE_URL answers: it runs on another data directory`);
    return `${pgData} is empty (nothing to replace) and the server of DATABASE_URL does not answer`;
  }
  const control = await runAs(options.osUser, join(options.pgBin, 'pg_controldata'), ['-D', dir], {
    timeoutMs: 30_000,
    env: { ...process.env, LC_ALL: 'C' },
  }).catch((err: Error) => {
    throw refuse(`pg_controldata cannot read ${pgData} (${err.message})`);
  });
  const localId = /^Database system identifier:\s*(\d+)/m.exec(control.stdout)?.[1];
  if (!localId) throw refuse(`pg_controldata names no system identifier for ${pgData}`);
  if (options.stanzaSystemId && options.stanzaSystemId !== localId)
    throw refuse(
      `${pgData} has system identifier ${localId} and the backup stanza ${options.stanzaSystemId}: it belongs to another cluster`,
    );
  const server = await serverIdentity(databaseUrl);
  if (server) {
    if (real(server.dataDirectory) !== dir)
      throw refuse(
        `the server of DATABASE_URL runs on ${server.dataDirectory}, not on ${pgData} (${dir}): this would stop and replace another server's data`,
      );
    if (server.systemId !== localId)
      throw refuse(`the server of DATABASE_URL has system identifier ${server.systemId}, ${pgData} has ${localId}`);
    return `${pgData} is the data directory of the server of DATABASE_URL (system identifier ${localId})`;
  }
  if (postmasterAlive(dir))
    throw refuse(`a PostgreSQL server runs on ${pgData} but the server of DATABASE_URL does not answer: it is another server`);
  if (!options.stanzaSystemId) throw refuse('the server of DATABASE_URL does not answer and the backup stanza names no system identifier');
  if (existsSync(join(dir, 'standby.signal')) && !options.allowStandby)
    throw refuse(
      `${pgData} is a standby (standby.signal) and the server of DATABASE_URL does not answer: restoring it would promote a second primary if the primary is running elsewhere; rerun with --allow-standby once you know the primary is gone`,
    );
  return `the server of DATABASE_URL does not answer; ${pgData} is stopped and belongs to the backup's cluster (system identifier ${localId})`;
}
