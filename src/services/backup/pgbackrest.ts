import { spawn } from 'node:child_process';

/** Process groups of pgBackRest runs still going: stopped when this process ends. */
const liveGroups = new Set<number>();

function killGroup(group: number | undefined, signal: NodeJS.Signals): void {
  if (!group) return;
  try {
    process.kill(-group, signal);
  } catch {
    // already gone
  }
}

/**
 * Stops every pgBackRest run of this process (its whole process group). Called when the process
 * ends: a backup must not outlive the worker that answers for it. A worker killed with SIGKILL
 * cannot do this; its job is then given up and corrected from the repository (BackupService.job).
 */
export function stopAllPgBackRest(signal: NodeJS.Signals = 'SIGTERM'): number {
  for (const g of liveGroups) killGroup(g, signal);
  const n = liveGroups.size;
  liveGroups.clear();
  return n;
}
process.on('exit', () => stopAllPgBackRest('SIGTERM'));

/** One backup as `pgbackrest info --output=json` lists it. */
export interface BackupInfo {
  label: string;
  type: 'full' | 'diff' | 'incr';
  startedAt: string;
  stoppedAt: string;
  /** Database size, and what this backup stored in the repository (compressed). */
  sizeBytes: number;
  deltaBytes: number;
  repositorySizeBytes: number;
  repositoryDeltaBytes: number;
  wal: { start: string | null; stop: string | null };
  lsn: { start: string | null; stop: string | null };
  prior: string | null;
  error: boolean;
  /**
   * Whether recovery from this backup can replay the archive to its end, as the archive was listed
   * with the inventory (see wal-scan's backupRecovery); absent when it was not checked.
   */
  recovery?: BackupRecovery | null;
}

/** A backup's recovery against the archive: the timeline followed, and what stops it (null: nothing). */
export interface BackupRecovery {
  timeline: number;
  /** Segments replayable from the backup's first one. */
  segments: number;
  /** True when recovery reaches the end of the archive on that timeline's history. */
  toEndOfArchive: boolean;
  problem: string | null;
  /** The backup cannot be recovered with this archive at all (a branch the followed timeline abandoned). */
  notChild?: boolean;
}

export interface StanzaInfo {
  stanza: string;
  status: { code: number; message: string };
  backups: BackupInfo[];
  archive: { min: string | null; max: string | null };
  /** The stanza's current database system identifier (`db` in pgBackRest's info), when listed. */
  systemId?: string | null;
  /** When pgBackRest info was started (ISO): its listing holds every segment archived before. */
  readAt?: string;
}

export interface RestoreOptions {
  /** The data directory to restore into (a scratch directory, or the real one for a real restore). */
  pgPath: string;
  set?: string;
  target?: { type: 'time' | 'name'; value: string };
  /** Replay no further than the end of the backup (consistency), instead of the whole archive. */
  immediate?: boolean;
  delta?: boolean;
  /** `off`: the restored server must never push WAL into the repository (validation restores). */
  archiveMode?: 'off' | 'preserve';
  targetAction?: 'promote' | 'pause';
  /** recovery_target_timeline: follow this timeline's history, not the archive's newest. */
  targetTimeline?: number;
}

/** The seam between the service and pgBackRest; tests hand services a fake. */
export interface BackupTool {
  info(timeoutMs: number): Promise<StanzaInfo>;
  backup(type: 'full' | 'diff' | 'incr', timeoutMs: number): Promise<void>;
  restore(options: RestoreOptions, timeoutMs: number): Promise<void>;
}

/** pgBackRest could not run, or failed; `code` says which, `detail` is its own message (for logs). */
export class BackupToolError extends Error {
  constructor(
    readonly code: 'pgbackrest_missing' | 'pgbackrest_timeout' | 'pgbackrest_failed' | 'repository_unreachable',
    message: string,
    readonly detail = '',
  ) {
    super(message);
  }
}

export interface PgBackRestOptions {
  bin: string;
  stanza: string;
  configPath?: string;
  /** Run as this user (pgBackRest must never write its repository as root). */
  runAs?: string;
  /** Output (stdout and stderr together) beyond which a run fails; MAX_OUTPUT_BYTES by default. */
  maxOutputBytes?: number;
}

/** pgBackRest's `info` of a long-lived repository, or a segment list, stays far below this. */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/** What a pgBackRest run that exited unsuccessfully (not stopped by us) means, from its stderr. */
export function classifyFailure(stderr: string, signal: NodeJS.Signals | null): BackupToolError {
  const text = stderr.trim().slice(-2000);
  if (signal) return new BackupToolError('pgbackrest_failed', `pgBackRest was stopped (${signal})`, text);
  if (/runuser: failed to execute|No such file or directory/.test(text) && !/ERROR: \[/.test(text))
    return new BackupToolError('pgbackrest_missing', 'pgBackRest is not installed on this host', text);
  // pgBackRest's own lock: the second guard when the job group's lock was lost (Redis restart).
  if (/ERROR: \[050\]/.test(text))
    return new BackupToolError(
      'pgbackrest_failed',
      'another pgBackRest backup of this stanza is running (its lock is held): this one was refused and changed nothing',
      text,
    );
  if (/ERROR: \[(041|055|103|104)\]/.test(text))
    return new BackupToolError('repository_unreachable', 'the pgBackRest repository is unreachable', text);
  return new BackupToolError('pgbackrest_failed', `pgBackRest failed: ${firstError(text)}`, text);
}

/** The real pgBackRest command line. */
export class PgBackRestCli implements BackupTool {
  constructor(private readonly options: PgBackRestOptions) {}

  private command(args: string[]): { file: string; argv: string[] } {
    const base = [
      `--stanza=${this.options.stanza}`,
      ...(this.options.configPath ? [`--config=${this.options.configPath}`] : []),
      '--log-level-console=error',
      '--log-level-stderr=error',
      ...args,
    ];
    if (this.options.runAs) return { file: 'runuser', argv: ['-u', this.options.runAs, '--', this.options.bin, ...base] };
    return { file: this.options.bin, argv: base };
  }

  private run(args: string[], timeoutMs: number): Promise<string> {
    const { file, argv } = this.command(args);
    return new Promise((resolve, reject) => {
      // Its own process group: a timeout (or this process ending) stops pgBackRest and everything
      // it started (runuser, its local and remote processes), not just the direct child.
      const child = spawn(file, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      const group = child.pid;
      if (group) liveGroups.add(group);
      let stdout = '';
      let stderr = '';
      let bytes = 0;
      const maxBytes = this.options.maxOutputBytes ?? MAX_OUTPUT_BYTES;
      const take = (into: 'out' | 'err') => (chunk: Buffer) => {
        if (settled) return;
        bytes += chunk.length;
        if (bytes > maxBytes) {
          // Cut output is never taken for a whole answer (JSON that ends early, a partial list).
          stop();
          return finish(new BackupToolError('pgbackrest_failed', `pgBackRest wrote more than ${maxBytes} bytes: its answer was not used`));
        }
        if (into === 'out') stdout += chunk.toString();
        else stderr += chunk.toString();
      };
      child.stdout.on('data', take('out'));
      child.stderr.on('data', take('err'));
      let killed = false;
      let settled = false;
      /** Stops the whole group; whatever ignores SIGTERM is gone a second later (not waited for). */
      const stop = () => {
        killed = true;
        killGroup(group, 'SIGTERM');
        setTimeout(() => {
          killGroup(group, 'SIGKILL');
          // Gone now, even if its pipes close later: no longer one of this process's live runs.
          if (group) liveGroups.delete(group);
        }, 1000).unref();
      };
      const timer = setTimeout(() => {
        stop();
        finish(new BackupToolError('pgbackrest_timeout', `pgBackRest gave no answer within ${timeoutMs} ms`, stderr.trim().slice(-2000)));
      }, timeoutMs);
      const finish = (err: Error | null, out?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(out ?? '');
      };
      child.on('error', (err: NodeJS.ErrnoException) => {
        if (group) liveGroups.delete(group);
        finish(
          err.code === 'ENOENT'
            ? new BackupToolError('pgbackrest_missing', 'pgBackRest is not installed on this host', err.message)
            : new BackupToolError('pgbackrest_failed', `pgBackRest could not run: ${err.message}`, err.message),
        );
      });
      // After a timeout the group is being stopped: once its leader has exited it is not a live run.
      child.on('exit', () => {
        if (killed && group) liveGroups.delete(group);
      });
      child.on('close', (code, signal) => {
        if (group) liveGroups.delete(group);
        if (killed) return;
        if (code === 0) return finish(null, stdout);
        finish(classifyFailure(stderr, signal));
      });
    });
  }

  async info(timeoutMs: number): Promise<StanzaInfo> {
    const readAt = new Date().toISOString();
    const out = await this.run(['info', '--output=json'], timeoutMs);
    // System identifiers exceed 2^53: kept as strings, not rounded by JSON.parse.
    const parsed = JSON.parse(out.replace(/"system-id"\s*:\s*(\d+)/g, '"system-id":"$1"')) as RawStanza[];
    const stanza = parsed.find((s) => s.name === this.options.stanza);
    if (!stanza) throw new BackupToolError('repository_unreachable', `stanza ${this.options.stanza} is not in the repository`);
    // 0 ok, 2 no valid backup yet (still a usable repository); anything else means it is not usable.
    if (stanza.status.code !== 0 && stanza.status.code !== 2) {
      throw new BackupToolError('repository_unreachable', `pgBackRest reports the stanza: ${stanza.status.message}`, stanza.status.message);
    }
    return { ...fromRaw(stanza), readAt };
  }

  /** Every archived WAL segment name (any timeline) and timeline history file name (`00000002.history`); partial files left out. */
  async listSegments(timeoutMs: number): Promise<string[]> {
    const out = await this.run(['repo-ls', `archive/${this.options.stanza}`, '--recurse'], timeoutMs);
    const names = new Set<string>();
    for (const line of out.split('\n')) {
      const m =
        /(?:^|\/)([0-9A-F]{24})-[0-9a-f]{40}(?:\.[a-z0-9]+)?$/.exec(line.trim()) ??
        /(?:^|\/)([0-9A-F]{8}\.history)(?:\.[a-z0-9]+)?$/.exec(line.trim());
      if (m) names.add(m[1]!);
    }
    return [...names];
  }

  /** One archived segment, decompressed, to `dest` (writable by the user pgBackRest runs as). */
  async fetchSegment(segment: string, dest: string, timeoutMs: number): Promise<void> {
    await this.run(['archive-get', segment, dest], timeoutMs);
  }

  async backup(type: 'full' | 'diff' | 'incr', timeoutMs: number): Promise<void> {
    // start-fast: a checkpoint now, not at the next checkpoint_timeout (minutes later).
    await this.run(['backup', `--type=${type}`, '--start-fast'], timeoutMs);
  }

  async restore(options: RestoreOptions, timeoutMs: number): Promise<void> {
    const args = ['restore', `--pg1-path=${options.pgPath}`];
    if (options.set) args.push(`--set=${options.set}`);
    // PostgreSQL reads recovery_target_time as '2026-11-26 08:15:00.123+00' (not ISO's T and Z).
    const target =
      options.target?.type === 'time'
        ? new Date(options.target.value).toISOString().replace('T', ' ').replace('Z', '+00')
        : options.target?.value;
    if (options.target)
      args.push(`--type=${options.target.type}`, `--target=${target}`, `--target-action=${options.targetAction ?? 'promote'}`);
    else if (options.immediate) args.push('--type=immediate', `--target-action=${options.targetAction ?? 'promote'}`);
    if (options.targetTimeline !== undefined) args.push(`--target-timeline=${options.targetTimeline}`);
    if (options.delta) args.push('--delta');
    if (options.archiveMode) args.push(`--archive-mode=${options.archiveMode}`);
    await this.run(args, timeoutMs);
  }
}

function firstError(text: string): string {
  return (text.split('\n').find((l) => l.includes('ERROR')) ?? text.split('\n')[0] ?? '').slice(0, 300);
}

interface RawStanza {
  name: string;
  status: { code: number; message: string };
  archive?: { min: string | null; max: string | null }[];
  db?: { id: number; 'system-id': number | string }[];
  backup?: {
    label: string;
    type: 'full' | 'diff' | 'incr';
    error?: boolean;
    prior: string | null;
    timestamp: { start: number; stop: number };
    info: { size: number; delta: number; repository: { size: number; delta: number } };
    archive?: { start: string | null; stop: string | null };
    lsn?: { start: string | null; stop: string | null };
  }[];
}

function fromRaw(raw: RawStanza): StanzaInfo {
  const current = [...(raw.db ?? [])].sort((a, b) => a.id - b.id).at(-1);
  const archives = raw.archive ?? [];
  const mins = archives
    .map((a) => a.min)
    .filter((x): x is string => !!x)
    .sort();
  const maxes = archives
    .map((a) => a.max)
    .filter((x): x is string => !!x)
    .sort();
  return {
    stanza: raw.name,
    status: raw.status,
    archive: { min: mins[0] ?? null, max: maxes.at(-1) ?? null },
    systemId: current === undefined ? null : String(current['system-id']),
    backups: (raw.backup ?? []).map((b) => ({
      label: b.label,
      type: b.type,
      startedAt: new Date(b.timestamp.start * 1000).toISOString(),
      stoppedAt: new Date(b.timestamp.stop * 1000).toISOString(),
      sizeBytes: b.info.size,
      deltaBytes: b.info.delta,
      repositorySizeBytes: b.info.repository.size,
      repositoryDeltaBytes: b.info.repository.delta,
      wal: { start: b.archive?.start ?? null, stop: b.archive?.stop ?? null },
      lsn: { start: b.lsn?.start ?? null, stop: b.lsn?.stop ?? null },
      prior: b.prior,
      error: b.error === true,
    })),
  };
}
