import type { MediaBackendName } from '../../domain.ts';
import { DR_LOCK_TTL_MS } from '../dr-state/cluster-lock.ts';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { DrStateService } from '../dr-state/dr-state-service.ts';
import type { ClusterLock } from '../dr-state/cluster-lock.ts';
import { PreconditionFailedError } from '../../http/app-error.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';
import type { MediaCache } from './media-cache.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';
import { errorMessage } from '../../lib/error-message.ts';

export interface MediaCheck {
  name: string;
  ok: boolean;
  latencyMs: number;
  detail: string;
}

/** Where canary objects go; sync skips them. */
export const CANARY_PREFIX = '.sav3-canary/';

async function timed(name: string, fn: () => Promise<string>): Promise<MediaCheck> {
  const started = performance.now();
  try {
    const detail = await fn();
    return { name, ok: true, detail, latencyMs: Math.round(performance.now() - started) };
  } catch (err) {
    return {
      name,
      ok: false,
      detail: errorMessage(err),
      latencyMs: Math.round(performance.now() - started),
    };
  }
}

/**
 * Writes, reads back (checksum compared) and deletes a canary object: proof that a backend is
 * reachable and writable, not just that its bucket exists.
 */
export async function canaryChecks(store: ObjectStore, timeoutMs: number, instanceId: string): Promise<MediaCheck[]> {
  const checks: MediaCheck[] = [];
  const key = `${CANARY_PREFIX}${instanceId.replace(/[^A-Za-z0-9._-]/g, '_')}-${Date.now()}-${randomBytes(4).toString('hex')}`;
  const body = randomBytes(1024);
  const digest = createHash('sha256').update(body).digest('hex');
  checks.push(
    await timed('bucket_reachable', async () => {
      await store.checkBucket(timeoutMs);
      return `bucket ${store.bucket} answers`;
    }),
  );
  if (!checks[0]!.ok) return checks;
  checks.push(
    await timed('canary_upload', async () => {
      await store.put(key, Readable.from([body]), body.length, 'application/octet-stream');
      return `wrote ${body.length} bytes`;
    }),
  );
  if (!checks[1]!.ok) return checks;
  checks.push(
    await timed('canary_download_checksum', async () => {
      const hash = createHash('sha256');
      for await (const chunk of await store.get(key)) hash.update(chunk as Buffer);
      const got = hash.digest('hex');
      if (got !== digest) throw new Error(`checksum mismatch: wrote ${digest}, read ${got}`);
      return 'read back with a matching sha256';
    }),
  );
  checks.push(
    await timed('canary_delete', async () => {
      await store.remove(key);
      return 'removed';
    }),
  );
  return checks;
}

export const MEDIA_LOCK = 'media';
/** Short, renewed while the switch runs (see DR_LOCK_TTL_MS). */
const MEDIA_LOCK_TTL_MS = DR_LOCK_TTL_MS;

/** Media backend switches: the target proven writable first, then every instance follows. */
export class MediaFailoverService {
  constructor(
    private readonly deps: {
      stores: ReadonlyMap<MediaBackendName, ObjectStore>;
      dr: DrStateService;
      locks: ClusterLock;
      cache: MediaCache;
      metrics: Pick<Metrics, 'failoverTotal'>;
      logger: Logger;
      instanceId: string;
      timeoutMs: number;
    },
  ) {}

  async switchBackend(input: { to: MediaBackendName; dryRun: boolean; force: boolean }, by: string) {
    const store = this.deps.stores.get(input.to);
    const checks: MediaCheck[] = store
      ? await canaryChecks(store, this.deps.timeoutMs, this.deps.instanceId)
      : [{ name: 'backend_configured', ok: false, latencyMs: 0, detail: `media backend ${input.to} is not configured` }];
    const failed = checks.filter((c) => !c.ok);
    const current = this.deps.dr.current().media.active;
    if (input.dryRun)
      return {
        changed: false,
        dryRun: true,
        wouldSwitch: failed.length === 0 && current !== input.to,
        from: current,
        to: input.to,
        checks,
      };
    if (!store || (failed.length > 0 && !input.force)) {
      this.deps.metrics.failoverTotal.inc({ kind: 'media_switch', result: 'refused' });
      throw new PreconditionFailedError(
        `switch refused: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}${store ? '; give "force": true to switch anyway' : ''}`,
        { checks },
      );
    }
    if (current === input.to)
      return { changed: false, dryRun: false, from: current, to: input.to, checks, message: `${input.to} is already the active backend` };
    return this.deps.locks.withLock(
      MEDIA_LOCK,
      'media-switch',
      async () => {
        const change = await this.deps.dr.change((s, now) => ({ ...s, media: { active: input.to, since: now, by } }));
        // Cached metadata says where each object was written; reads still try every backend, but
        // entries cached before the switch are dropped so none steers a read at a dead backend.
        const cleared = await this.deps.cache.clear().catch(() => 0);
        this.deps.metrics.failoverTotal.inc({ kind: 'media_switch', result: 'success' });
        this.deps.logger.warn({ from: current, to: input.to, forced: failed.length > 0, cleared }, 'media backend switched');
        return {
          changed: true,
          dryRun: false,
          forced: failed.length > 0,
          from: change.before.media.active,
          to: input.to,
          checks,
          cacheEntriesCleared: cleared,
          change,
        };
      },
      { ttlMs: MEDIA_LOCK_TTL_MS, busyMessage: 'another media DR operation is running' },
    );
  }

  async verify() {
    const backends = await Promise.all(
      [...this.deps.stores].map(async ([name, store]) => {
        const checks = await canaryChecks(store, this.deps.timeoutMs, this.deps.instanceId);
        return { backend: name, bucket: store.bucket, status: checks.every((c) => c.ok) && checks.length === 4 ? 'pass' : 'fail', checks };
      }),
    );
    const active = this.deps.dr.current().media.active;
    const activeOk = backends.find((b) => b.backend === active)?.status === 'pass';
    return { status: activeOk ? (backends.every((b) => b.status === 'pass') ? 'pass' : 'degraded') : 'fail', active, backends };
  }
}
