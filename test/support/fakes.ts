import type { MediaBackendName } from '../../src/domain.ts';
import { Readable } from 'node:stream';
import type { AuditEvent, AuditSink, AuditSpool } from '../../src/services/audit/audit-event.ts';
import type { BackupInfo, BackupTool, StanzaInfo } from '../../src/services/backup/pgbackrest.ts';
import type { ValidatorDeps } from '../../src/services/backup/backup-validator.ts';
import { captureLogger } from './log-capture.ts';
import type { LockStore } from '../../src/services/dr-state/cluster-lock.ts';
import type { CasResult, DrStateStore } from '../../src/services/dr-state/dr-state-store.ts';
import type { DrState, InstanceHeartbeat } from '../../src/services/dr-state/dr-state.ts';
import type { JobRecordStore } from '../../src/services/jobs/job-records.ts';
import type { CachedMeta, MediaCache } from '../../src/services/media/media-cache.ts';
import type { MediaMetadata, MediaRepository, WriteCommit } from '../../src/services/media/media-repository.ts';
import type { MediaVersionRepository, OutboxTask, RetireReason, StoredVersion } from '../../src/services/media/media-version-repository.ts';
import { ObjectMissingError, type ObjectStore, type StoredObjectInfo } from '../../src/adapters/object-store.ts';

/*
 * One fake per port of the service, in memory, each with the failure it needs to show (`down`,
 * `failWith`): unit tests import them from here and define none of their own.
 */

export class MemoryObjectStore implements ObjectStore {
  readonly objects = new Map<string, { body: Buffer; contentType: string }>();
  /** When set, every call fails with this error (a dead backend). */
  failWith?: Error;
  /** Chunks seen by put() before the request body ended, to prove streaming. */
  chunksBeforeEnd: number[] = [];

  constructor(
    readonly backend: MediaBackendName,
    readonly bucket = `bucket-${backend}`,
  ) {}

  private check(): void {
    if (this.failWith) throw this.failWith;
  }

  async checkBucket(): Promise<void> {
    this.check();
  }

  async put(key: string, body: Readable, size: number, contentType: string): Promise<void> {
    this.check();
    const chunks: Buffer[] = [];
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      this.chunksBeforeEnd.push((chunk as Buffer).length);
    }
    const data = Buffer.concat(chunks);
    if (data.length !== size) throw new Error(`size mismatch: ${data.length} != ${size}`);
    this.objects.set(key, { body: data, contentType });
  }

  async get(key: string): Promise<Readable> {
    this.check();
    const object = this.objects.get(key);
    if (!object) throw new ObjectMissingError(this.backend, key);
    return Readable.from([object.body]);
  }

  async stat(key: string): Promise<StoredObjectInfo | undefined> {
    this.check();
    const object = this.objects.get(key);
    return object ? { key, size: object.body.length, etag: 'etag', contentType: object.contentType } : undefined;
  }

  async remove(key: string): Promise<void> {
    this.check();
    this.objects.delete(key);
  }

  async *list(prefix: string): AsyncIterable<StoredObjectInfo> {
    this.check();
    for (const [key, object] of this.objects) {
      if (key.startsWith(prefix)) yield { key, size: object.body.length, etag: 'etag', contentType: object.contentType };
    }
  }

  saturated(): string[] {
    return [];
  }

  close(): void {}
}

/** The pointer table in memory, with the same commit semantics: one version per key, a seq per commit. */
export class MemoryMediaRepository implements MediaRepository {
  readonly rows = new Map<string, MediaMetadata>();
  readonly versions = new Map<string, { key: string; replaced: boolean }>();
  failWith?: Error;
  /** When set, the commit is applied but its answer is lost (a connection cut after COMMIT). */
  loseAnswer = false;
  private seq = 0;

  async find(key: string) {
    if (this.failWith) throw this.failWith;
    return this.rows.get(key);
  }
  async commitWrite(w: WriteCommit) {
    if (this.failWith) throw this.failWith;
    const old = this.rows.get(w.key);
    if (old?.version) this.versions.get(old.version)!.replaced = true;
    this.versions.set(w.version, { key: w.key, replaced: false });
    const meta: MediaMetadata = {
      key: w.key,
      size: w.size,
      sha256: w.sha256,
      contentType: w.contentType,
      backend: w.backend,
      createdAt: w.createdAt,
      version: w.version,
      backends: [w.backend],
      seq: ++this.seq,
    };
    this.rows.set(w.key, meta);
    if (this.loseAnswer) throw new Error('Connection terminated unexpectedly');
    return meta;
  }
  async commitDelete(key: string) {
    if (this.failWith) throw this.failWith;
    const old = this.rows.get(key);
    if (!old) return undefined;
    if (old.version) this.versions.get(old.version)!.replaced = true;
    this.rows.delete(key);
    return ++this.seq;
  }
  async versionCommitted(version: string) {
    if (this.failWith) throw this.failWith;
    return this.versions.has(version);
  }
  async list(prefix: string, limit: number, after?: string) {
    if (this.failWith) throw this.failWith;
    return [...this.rows.values()]
      .filter((m) => m.key.startsWith(prefix) && (after === undefined || m.key > after))
      .sort((a, b) => (a.key < b.key ? -1 : 1))
      .slice(0, limit);
  }
}

export class MemoryMediaCache implements MediaCache {
  readonly entries = new Map<string, { seq: number; value: MediaMetadata | 'deleted' }>();
  down = false;

  async get(key: string): Promise<CachedMeta> {
    return this.down ? undefined : this.entries.get(key)?.value;
  }
  private set(key: string, seq: number, value: MediaMetadata | 'deleted') {
    if (this.down) return;
    const cur = this.entries.get(key);
    if (!cur || cur.seq < seq) this.entries.set(key, { seq, value });
  }
  /** Keys a writer dropped (outcome unknown, superseded). */
  readonly invalidated: string[] = [];
  async put(meta: MediaMetadata) {
    if (meta.seq > 0) this.set(meta.key, meta.seq, meta);
  }
  async recordWrite(meta: MediaMetadata) {
    if (meta.seq > 0) this.set(meta.key, meta.seq, meta);
    else await this.invalidate(meta.key);
  }
  async markDeleted(key: string, seq: number) {
    this.set(key, seq, 'deleted');
  }
  async invalidate(key: string) {
    this.invalidated.push(key);
    if (!this.down) this.entries.delete(key);
  }
  async clear() {
    const n = this.entries.size;
    this.entries.clear();
    return n;
  }
}

/** Versions and the outbox in memory, for the replicator, sync and garbage collector. */
export class MemoryVersionRepository implements MediaVersionRepository {
  readonly versions = new Map<string, StoredVersion>();
  /** key -> current version id */
  readonly pointers = new Map<string, string>();
  readonly outbox = new Map<
    string,
    {
      version: string;
      target: MediaBackendName;
      attempts: number;
      failures: number;
      leaseUntil: number;
      createdAt: number;
      token?: string;
      lastError?: string;
    }
  >();
  /** Retired rows, as media_outbox_retired keeps them. */
  readonly retired: { taskId: string; version: string; target: MediaBackendName; reason: RetireReason; createdAt: number }[] = [];
  failWith?: Error;
  private nextTask = 0;

  /** Records a committed version (as commitWrite does), with an outbox row per copy target. */
  commit(key: string, version: StoredVersion, copyTo: MediaBackendName[] = []): void {
    const old = this.pointers.get(key);
    if (old) this.versions.get(old)!.replaced = true;
    this.versions.set(version.id, version);
    this.pointers.set(key, version.id);
    for (const target of copyTo)
      this.outbox.set(String(++this.nextTask), {
        version: version.id,
        target,
        attempts: 0,
        failures: 0,
        leaseUntil: 0,
        createdAt: Date.now(),
      });
  }
  private check() {
    if (this.failWith) throw this.failWith;
  }
  async claimOutbox(limit: number, leaseMs: number, token: string, down: MediaBackendName[] = []): Promise<OutboxTask[]> {
    this.check();
    const now = Date.now();
    const due = [...this.outbox]
      .filter(([, t]) => {
        const v = this.versions.get(t.version);
        return t.leaseUntil <= now && !down.includes(t.target) && v !== undefined && !v.backends.every((b) => down.includes(b));
      })
      .slice(0, limit);
    return due.map(([id, t]) => {
      const v = this.versions.get(t.version)!;
      t.leaseUntil = now + leaseMs;
      t.attempts += 1;
      t.token = token;
      return { ...v, backends: [...v.backends], taskId: id, target: t.target, attempts: t.attempts, failures: t.failures };
    });
  }
  async renewOutbox(token: string, taskIds: string[], leaseMs: number) {
    this.check();
    for (const id of taskIds) {
      const t = this.outbox.get(id);
      if (t?.token === token) t.leaseUntil = Date.now() + leaseMs;
    }
  }
  async completeCopy(version: string, target: MediaBackendName) {
    this.check();
    const v = this.versions.get(version);
    if (v && !v.backends.includes(target)) v.backends.push(target);
    for (const [id, t] of this.outbox) if (t.version === version && t.target === target) this.outbox.delete(id);
    return v !== undefined;
  }
  async retryOutbox(taskId: string, token: string, error: string, delayMs: number, definitive = false) {
    this.check();
    const t = this.outbox.get(taskId);
    if (t?.token !== token) return;
    t.leaseUntil = Date.now() + delayMs;
    t.token = undefined;
    t.lastError = error;
    if (definitive) t.failures += 1;
  }
  async retireOutbox(taskId: string, token: string, reason: RetireReason) {
    this.check();
    const t = this.outbox.get(taskId);
    if (t?.token !== token) return false;
    this.outbox.delete(taskId);
    this.retired.push({ taskId, version: t.version, target: t.target, reason, createdAt: t.createdAt });
    return true;
  }
  async outboxStats() {
    this.check();
    const now = Date.now();
    const unresolved = this.retired.filter((r) => {
      const v = this.versions.get(r.version);
      return v && [...this.pointers.values()].includes(r.version) && !v.backends.includes(r.target);
    });
    const created = [...this.outbox.values(), ...unresolved].map((t) => t.createdAt);
    return {
      backlog: this.outbox.size,
      stuck: [...this.outbox.values()].filter((t) => (t.attempts >= 3 && t.lastError) || now - t.createdAt > 60_000).length,
      retired: unresolved.length,
      oldestAgeSeconds: created.length ? (now - Math.min(...created)) / 1000 : 0,
    };
  }
  async purgeRetired() {
    return 0;
  }
  private currentSorted(afterKey: string) {
    return [...this.pointers]
      .filter(([k]) => k > afterKey)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([, id]) => this.versions.get(id)!);
  }
  async currentMissingOn(target: MediaBackendName, afterKey: string, limit: number) {
    this.check();
    return this.currentSorted(afterKey)
      .filter((v) => !v.backends.includes(target))
      .slice(0, limit);
  }
  async currentOn(target: MediaBackendName, afterKey: string, limit: number) {
    this.check();
    return this.currentSorted(afterKey)
      .filter((v) => v.backends.includes(target))
      .slice(0, limit);
  }
  async current(afterKey: string, limit: number) {
    this.check();
    return this.currentSorted(afterKey).slice(0, limit);
  }
  async countLegacy() {
    return 0;
  }
  async collect() {
    return [];
  }
  async purgeTombstones() {
    return 0;
  }
  async referenced(names: string[]) {
    return new Set(names.filter((name) => name.startsWith('v/') && this.versions.has(name.slice(2))));
  }
  async markBad(version: string, backend: MediaBackendName) {
    this.check();
    const v = this.versions.get(version);
    if (!v?.backends.includes(backend)) return false;
    v.backends = v.backends.filter((b) => b !== backend);
    return true;
  }
  /** No old-layout objects in memory (the collector of them is tested against PostgreSQL). */
  async legacyGarbage() {
    return [];
  }
  async dropLegacyGarbage() {}
}

/** Cluster-wide locks with expiries on a clock the test moves (`now`); `down` fails every call. */
export class MemoryLockStore implements LockStore {
  readonly locks = new Map<string, { owner: string; expiresAt: number }>();
  down = false;
  now = 0;

  private check(): void {
    if (this.down) throw new Error('Connection is closed.');
  }
  private live(name: string) {
    const lock = this.locks.get(name);
    if (lock && lock.expiresAt <= this.now) this.locks.delete(name);
    return this.locks.get(name);
  }
  async acquire(name: string, owner: string, ttlMs: number): Promise<boolean> {
    this.check();
    if (this.live(name)) return false;
    this.locks.set(name, { owner, expiresAt: this.now + ttlMs });
    return true;
  }
  async extend(name: string, owner: string, ttlMs: number): Promise<boolean> {
    this.check();
    const lock = this.live(name);
    if (lock?.owner !== owner) return false;
    lock.expiresAt = this.now + ttlMs;
    return true;
  }
  async release(name: string, owner: string): Promise<void> {
    this.check();
    if (this.live(name)?.owner === owner) this.locks.delete(name);
  }
  async holder(name: string): Promise<string | null> {
    this.check();
    return this.live(name)?.owner ?? null;
  }
}

/** The shared DR state with Redis's compare-and-set semantics; `down` fails every call. */
export class MemoryDrStateStore implements DrStateStore {
  state: DrState | null = null;
  down = false;
  beats = new Map<string, InstanceHeartbeat>();
  private check() {
    if (this.down) throw new Error('Connection is closed.');
  }
  async read() {
    this.check();
    return this.state;
  }
  async compareAndSet(expected: number, next: DrState): Promise<CasResult> {
    this.check();
    if ((this.state?.version ?? 0) !== expected) return { ok: false, current: this.state };
    this.state = next;
    return { ok: true };
  }
  async restore(state: DrState) {
    this.check();
    if (this.state && this.state.version >= state.version) return false;
    this.state = state;
    return true;
  }
  async heartbeat(beat: InstanceHeartbeat) {
    this.check();
    this.beats.set(beat.id, beat);
  }
  async instances() {
    this.check();
    return [...this.beats.values()];
  }
  async forget(id: string) {
    this.check();
    this.beats.delete(id);
  }
}

/** Job records (`jobs:<id>`), kept as JSON like Redis keeps them; `down` fails every call. */
export class MemoryJobRecords implements JobRecordStore {
  readonly records = new Map<string, string>();
  down = false;
  async save(id: string, record: object): Promise<void> {
    if (this.down) throw new Error('Connection is closed.');
    this.records.set(id, JSON.stringify(record));
  }
  async load<T>(id: string): Promise<T | undefined> {
    if (this.down) throw new Error('Connection is closed.');
    const raw = this.records.get(id);
    return raw === undefined ? undefined : (JSON.parse(raw) as T);
  }
}

/** The audit table; `down` fails writes (PostgreSQL unreachable). */
export class MemoryAuditSink implements AuditSink {
  rows = new Map<string, AuditEvent>();
  down = false;
  async write(events: AuditEvent[]) {
    if (this.down) throw new Error('ECONNREFUSED');
    for (const e of events) this.rows.set(e.id, e);
  }
  async recent(limit = 100) {
    return [...this.rows.values()].slice(-limit).reverse();
  }
}

/** The audit spool (a Redis list); `down` fails every call. */
export class MemoryAuditSpool implements AuditSpool {
  items: AuditEvent[] = [];
  down = false;
  private check() {
    if (this.down) throw new Error('Connection is closed.');
  }
  async push(e: AuditEvent) {
    this.check();
    this.items.push(e);
  }
  async drain(max: number, fn: (events: AuditEvent[]) => Promise<void>) {
    this.check();
    const batch = this.items.slice(0, max);
    if (batch.length === 0) return 0;
    await fn(batch);
    this.items.splice(0, batch.length);
    return batch.length;
  }
  async size() {
    this.check();
    return this.items.length;
  }
}

const fakeBackup = (label: string, stoppedAt: string) => ({
  label,
  type: 'full' as const,
  startedAt: stoppedAt,
  stoppedAt,
  sizeBytes: 10,
  deltaBytes: 10,
  repositorySizeBytes: 5,
  repositoryDeltaBytes: 5,
  wal: { start: '000000010000000000000002', stop: '000000010000000000000002' },
  lsn: { start: '0/2000028', stop: '0/2000100' },
  prior: null,
  error: false,
});

/** pgBackRest stand-in: one full backup listed; the first `failures` backups fail, later ones add to the list. */
export class FakeBackupTool implements BackupTool {
  backups = [fakeBackup('20261125-000000F', '2026-11-25T00:00:05.000Z')];
  attempts = 0;
  /** While set, a backup waits for it: the test decides when the running job may end. */
  gate?: Promise<void>;
  constructor(private readonly options: { failures: number } = { failures: 0 }) {}
  async info(): Promise<StanzaInfo> {
    return {
      stanza: 'main',
      status: { code: 0, message: 'ok' },
      archive: { min: '000000010000000000000001', max: '000000010000000000000009' },
      backups: [...this.backups],
    };
  }
  async backup(): Promise<void> {
    this.attempts += 1;
    await new Promise((r) => setTimeout(r, 200));
    await this.gate;
    if (this.attempts <= this.options.failures) throw new Error('pgBackRest failed: ERROR: [056]: unable to find primary cluster');
    this.backups.push(fakeBackup(`202611${25 + this.backups.length}-000000F`, new Date().toISOString()));
  }
  async restore(): Promise<void> {
    throw new Error('restore is not faked');
  }
}

/** One backup as `pgbackrest info` lists it: a good full backup of a byte, no WAL or LSN range, unless `fields` say otherwise. */
export const listedBackup = (fields: Pick<BackupInfo, 'label' | 'startedAt' | 'stoppedAt'> & Partial<BackupInfo>): BackupInfo => ({
  type: 'full',
  sizeBytes: 1,
  deltaBytes: 1,
  repositorySizeBytes: 1,
  repositoryDeltaBytes: 1,
  wal: { start: null, stop: null },
  lsn: { start: null, stop: null },
  prior: null,
  error: false,
  ...fields,
});

/** A stanza with one good full backup, as `pgbackrest info` reports it. */
export const oneFullBackup: StanzaInfo = {
  stanza: 'main',
  status: { code: 0, message: 'ok' },
  archive: { min: '000000010000000000000001', max: '000000010000000000000009' },
  backups: [listedBackup({ label: '20261126-080000F', startedAt: '2026-11-26T08:00:00.000Z', stoppedAt: '2026-11-26T08:00:05.000Z' })],
};

/**
 * A BackupValidator's dependencies for unit tests: scratch clusters under `root`, no live data
 * directories, no media check, a silent log and short bounds; `over` gives the rest (tool, info,
 * store) and replaces any of these.
 */
export function validatorDeps(
  root: string,
  over: Partial<ValidatorDeps> & Pick<ValidatorDeps, 'tool' | 'info' | 'validationStore'>,
): ValidatorDeps {
  return {
    media: undefined,
    pgBin: '/usr/lib/postgresql/15/bin',
    osUser: 'postgres',
    scratchRoot: root,
    liveDataDirs: async () => [],
    databaseName: 'app',
    databaseUser: 'postgres',
    migrationsDir: '/nonexistent',
    instanceId: 'unit',
    logger: captureLogger('silent').logger,
    restoreTimeoutMs: 1000,
    recoveryTimeoutMs: 1000,
    ...over,
  };
}
