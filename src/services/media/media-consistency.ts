import type { MediaBackendName } from '../../domain.ts';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../logger.ts';
import { orphans } from './media-gc.ts';
import { versionObjectName } from './media-repository.ts';
import type { MediaVersionRepository, StoredVersion } from './media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';
import type { JobRecordStore } from '../jobs/job-records.ts';

const PAGE = 500;
const CONCURRENCY = 8;
const LISTED = 100;

export interface ConsistencyReport {
  /** fail: content missing or wrong; degraded: a backend could not be checked. */
  status: 'pass' | 'degraded' | 'fail';
  /** Keys whose current version was checked. */
  checked: number;
  /** Keys of the old layout (content under the key), not checked: migrate them. */
  legacy: number;
  /** A backend the metadata says holds a version lacks it, or holds a different size. */
  problems: { key: string; version: string; backend: MediaBackendName; problem: 'missing' | 'size' | 'unreachable' }[];
  problemCount: number;
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
  async start(): Promise<ConsistencyReport | { async: true; job: { id: string; status: 'running' } }> {
    const probe = await this.deps.versions.current('', this.deps.inlineMax + 1);
    if (probe.length <= this.deps.inlineMax) return this.check();
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
    void this.check()
      .then((report) => {
        job.report = report;
        job.status = report.status === 'fail' ? 'failed' : 'succeeded';
      })
      .catch((err: unknown) => {
        job.status = 'failed';
        job.error = err instanceof Error ? err.message : String(err);
      })
      .finally(async () => {
        clearInterval(heartbeat);
        job.finishedAt = job.updatedAt = new Date().toISOString();
        await save();
      });
    return { async: true, job: { id, status: 'running' } };
  }

  async check(): Promise<ConsistencyReport> {
    const report: ConsistencyReport = {
      status: 'pass',
      checked: 0,
      legacy: await this.deps.versions.countLegacy(),
      problems: [],
      problemCount: 0,
      orphans: {},
      unreachable: [],
    };
    const problem = (v: StoredVersion, backend: MediaBackendName, kind: 'missing' | 'size' | 'unreachable') => {
      report.problemCount += 1;
      if (report.problems.length < LISTED) report.problems.push({ key: v.key, version: v.id, backend, problem: kind });
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
              try {
                const stat = await store.stat(versionObjectName(v.id));
                if (!stat) problem(v, backend, 'missing');
                else if (stat.size !== v.size) problem(v, backend, 'size');
              } catch {
                problem(v, backend, 'unreachable');
              }
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
        for await (const batch of orphans(store, this.deps.versions, this.deps.graceMs)) n += batch.length;
        report.orphans[name] = n;
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
