import type { MediaBackendName } from '../../domain.ts';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../logger.ts';
import { orphans } from './media-gc.ts';
import { versionObjectName } from './media-repository.ts';
import type { MediaVersionRepository, StoredVersion } from './media-version-repository.ts';
import { HashingStream } from './hashing-stream.ts';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { ObjectMissingError, type ObjectStore } from '../../adapters/object-store.ts';
import type { JobRecordStore } from '../jobs/job-records.ts';
import { errorMessage } from '../../lib/error-message.ts';

const PAGE = 500;
const CONCURRENCY = 8;
const LISTED = 100;

type Problem = 'missing' | 'size' | 'corrupt' | 'unreachable';

export interface ConsistencyOptions {
  /** Read and hash every current version on every backend that should hold it (slow on large stores). */
  deep?: boolean;
}

export interface ConsistencyReport {
  /** fail: content missing or wrong; degraded: a backend could not be checked. */
  status: 'pass' | 'degraded' | 'fail';
  /** Keys whose current version was checked. */
  checked: number;
  /** Keys of the old layout (content under the key), not checked: migrate them. */
  legacy: number;
  /** Whether every checked version's content was read and hashed (`deep`), or only its size compared. */
  deep: boolean;
  /**
   * A backend the metadata says holds a version lacks it, holds a different size, or (deep) holds
   * bytes whose sha256 differs.
   */
  problems: { key: string; version: string; backend: MediaBackendName; problem: Problem }[];
  problemCount: number;
  /** Versions whose content on a backend hashed to something else (deep checks only). */
  corrupt: number;
  /**
   * Missing or corrupt copies handed to the repair path: the backend is removed from the version's
   * backends and an outbox row copies the version there again from a backend that holds it.
   */
  repairQueued: number;
  /** Objects under v/ that are not version names, per backend: reported, never removed. */
  foreign: Partial<Record<MediaBackendName, number>>;
  /** Unreferenced content older than the grace period, per backend (the garbage collector removes it). */
  orphans: Partial<Record<MediaBackendName, number>>;
  unreachable: MediaBackendName[];
}

/**
 * The consistency pass of `POST /admin/verify/media`: metadata against content on each backend
 * (every current version present, at its size, where the metadata says it is) and orphans.
 */
export class MediaConsistencyChecker {
  constructor(
    private readonly deps: {
      versions: MediaVersionRepository;
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      graceMs: number;
      jobs: JobRecordStore;
      instanceId: string;
      logger: Logger;
      /** Above this many keys the pass runs as a job. */
      inlineMax: number;
    },
  ) {}

  /** Inline for small stores; a job (GET /admin/jobs/{id}) for large ones. */
  async start(options: ConsistencyOptions = {}): Promise<ConsistencyReport | { async: true; job: { id: string; status: 'running' } }> {
    const probe = await this.deps.versions.current('', this.deps.inlineMax + 1);
    if (probe.length <= this.deps.inlineMax) return this.check(options);
    const id = randomUUID();
    const now = new Date().toISOString();
    const job = {
      id,
      kind: 'media.verify',
      status: 'running',
      instanceId: this.deps.instanceId,
      startedAt: now,
      updatedAt: now,
      finishedAt: null as string | null,
      error: null as string | null,
      report: null as ConsistencyReport | null,
    };
    const save = () => this.deps.jobs.save(id, job, 7 * 24 * 3600).catch(() => undefined);
    await save();
    const heartbeat = setInterval(() => {
      job.updatedAt = new Date().toISOString();
      void save();
    }, 2000);
    void this.check(options)
      .then((report) => {
        job.report = report;
        job.status = report.status === 'fail' ? 'failed' : 'succeeded';
      })
      .catch((err: unknown) => {
        job.status = 'failed';
        job.error = errorMessage(err);
      })
      .finally(async () => {
        clearInterval(heartbeat);
        job.finishedAt = job.updatedAt = new Date().toISOString();
        await save();
      });
    return { async: true, job: { id, status: 'running' } };
  }

  async check(options: ConsistencyOptions = {}): Promise<ConsistencyReport> {
    const deep = options.deep === true;
    const report: ConsistencyReport = {
      status: 'pass',
      checked: 0,
      deep,
      legacy: await this.deps.versions.countLegacy(),
      problems: [],
      problemCount: 0,
      corrupt: 0,
      repairQueued: 0,
      orphans: {},
      foreign: {},
      unreachable: [],
    };
    const problem = async (v: StoredVersion, backend: MediaBackendName, kind: Problem) => {
      report.problemCount += 1;
      if (kind === 'corrupt') report.corrupt += 1;
      if (report.problems.length < LISTED) report.problems.push({ key: v.key, version: v.id, backend, problem: kind });
      if (kind === 'unreachable') return;
      // The metadata no longer claims the copy, and the outbox copies it again: sync, the
      // replicator, the backlog and the RPO exposure all see it until it is repaired.
      const queued = await this.deps.versions.markBad(v.id, backend).catch((err: unknown) => {
        this.deps.logger.warn({ version: v.id, backend, err: String(err) }, 'media repair could not be queued');
        return false;
      });
      if (queued) report.repairQueued += 1;
      this.deps.logger.error(
        { key: v.key, version: v.id, backend, problem: kind, repairQueued: queued },
        'media content inconsistent with its metadata',
      );
    };
    for (let after = ''; ;) {
      const page = await this.deps.versions.current(after, PAGE);
      const queue = [...page];
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let v = queue.shift(); v; v = queue.shift()) {
            report.checked += 1;
            for (const backend of v.backends) {
              const store = this.deps.stores.get(backend);
              if (!store) continue;
              let found: Problem | undefined;
              try {
                const stat = await store.stat(versionObjectName(v.id));
                if (!stat) found = 'missing';
                else if (stat.size !== v.size) found = 'size';
                else if (deep) found = (await contentHash(store, v.id)) === v.sha256 ? undefined : 'corrupt';
              } catch (err) {
                found = err instanceof ObjectMissingError ? 'missing' : 'unreachable';
              }
              if (found) await problem(v, backend, found);
            }
          }
        }),
      );
      if (page.length < PAGE) break;
      after = page.at(-1)!.key;
    }
    for (const [name, store] of this.deps.stores) {
      try {
        let n = 0;
        let foreign = 0;
        for await (const batch of orphans(store, this.deps.versions, this.deps.graceMs)) {
          n += batch.orphans.length;
          foreign += batch.foreign.length;
        }
        report.orphans[name] = n;
        if (foreign > 0) report.foreign[name] = foreign;
      } catch {
        report.unreachable.push(name);
      }
    }
    const unreachable = report.unreachable.length > 0 || report.problems.some((p) => p.problem === 'unreachable');
    const wrong =
      report.problems.some((p) => p.problem !== 'unreachable') || (report.problemCount > report.problems.length && !unreachable);
    report.status = wrong ? 'fail' : unreachable ? 'degraded' : 'pass';
    return report;
  }
}

/** The sha256 of a version's content on `store`, read to the end (no size limit beyond the stored one). */
async function contentHash(store: ObjectStore, version: string): Promise<string> {
  const source = await store.get(versionObjectName(version));
  const hasher = new HashingStream(Number.MAX_SAFE_INTEGER);
  await pipeline(
    source,
    hasher,
    new Writable({
      write: (_chunk, _encoding, done) => done(),
    }),
  );
  return hasher.digest();
}
