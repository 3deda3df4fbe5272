import type { DatabaseProbeData, DatabaseTarget } from '../../domain.ts';
import { randomUUID } from 'node:crypto';
import type { ProbeRunner } from '../../health/probe-runner.ts';
import type { DatabaseClients } from '../../adapters/database-clients.ts';
import { readMigrations } from './migrator.ts';
import type { ReplicationReport } from './replication-monitor.ts';
import { parseLsn } from './lsn.ts';
import type { ProbeResult } from '../../health/probe-runner.ts';

/** A replication report from probes of both nodes made for this call (never a cached health probe). */
export interface FreshReplication {
  report: ReplicationReport;
  probes: Record<DatabaseTarget, ProbeResult<DatabaseProbeData> | undefined>;
}

/**
 * Whether the standby follows the writer: it is in recovery on the same cluster, its WAL receiver
 * streams, it is on the writer's timeline, and it has not replayed past the writer's position
 * (a node ahead of the writer, e.g. after the writer was restored to an earlier point, holds WAL the
 * writer never wrote and must be rebuilt).
 */
export function standbyFollows(fresh: FreshReplication): { follows: boolean; why: string } {
  const { report, probes } = fresh;
  const w = probes[report.writer];
  const s = probes[report.standby];
  if (!w?.ok || !w.data || w.data.inRecovery) return { follows: false, why: `no writer answers (${report.writer})` };
  if (!s?.ok || !s.data) return { follows: false, why: `${report.standby} does not answer` };
  if (!s.data.inRecovery) return { follows: false, why: `${report.standby} is not in recovery: it is a primary of its own` };
  if (report.state === 'diverged')
    return { follows: false, why: `${report.standby} diverged: ${report.diverged ?? 'it holds WAL the writer never had'}` };
  if (w.data.systemId && s.data.systemId && w.data.systemId !== s.data.systemId)
    return { follows: false, why: `${report.standby} belongs to another cluster (system identifier ${s.data.systemId})` };
  if (s.data.receiverStatus !== 'streaming')
    return { follows: false, why: `${report.standby}'s WAL receiver is ${s.data.receiverStatus ?? 'not running'}` };
  if (w.data.timeline !== null && s.data.timeline !== null && w.data.timeline !== s.data.timeline)
    return { follows: false, why: `${report.standby} is on timeline ${s.data.timeline}, ${report.writer} on ${w.data.timeline}` };
  const replayed = s.data.replayLsn ?? s.data.receiveLsn;
  if (w.data.currentLsn && replayed && parseLsn(replayed) > parseLsn(w.data.currentLsn))
    return { follows: false, why: `${report.standby} replayed up to ${replayed}, ahead of ${report.writer}'s ${w.data.currentLsn}` };
  return { follows: true, why: `${report.standby} streams from ${report.writer} on timeline ${w.data.timeline ?? 'unknown'}` };
}

export interface VerifyCheck {
  name: string;
  status: 'pass' | 'fail' | 'skip';
  latencyMs: number;
  detail: string;
}

async function timed(name: string, fn: () => Promise<Omit<VerifyCheck, 'name' | 'latencyMs'>>): Promise<VerifyCheck> {
  const started = performance.now();
  try {
    const result = await fn();
    return { name, ...result, latencyMs: Math.round(performance.now() - started) };
  } catch (err) {
    return {
      name,
      status: 'fail',
      detail: err instanceof Error ? err.message.split('\n')[0]! : String(err),
      latencyMs: Math.round(performance.now() - started),
    };
  }
}

/** Deep checks of the active database target, for after a failover: a report of named checks. */
export class DatabaseVerifier {
  constructor(
    private readonly deps: {
      clients: DatabaseClients;
      runners: ReadonlyMap<DatabaseTarget, ProbeRunner<DatabaseProbeData>>;
      /** Probes both nodes now; undefined without a replica. */
      replication: () => Promise<FreshReplication | undefined>;
      migrationsDir: string;
      instanceId: string;
    },
  ) {}

  async verify() {
    const target = this.deps.clients.active;
    const prisma = this.deps.clients.client(target);
    let inRecovery = false;
    const checks: VerifyCheck[] = [];
    checks.push(
      await timed('connect', async () => {
        const result = await this.deps.runners.get(target)?.run();
        if (!result?.ok) throw new Error(`no answer from ${target}: ${result?.error?.code ?? 'not configured'}`);
        inRecovery = result.data?.inRecovery === true;
        return { status: 'pass', detail: `${target} answered; ${inRecovery ? 'in recovery (read-only standby)' : 'accepts writes'}` };
      }),
    );
    checks.push(
      await timed('canary_write_read_delete', async () => {
        if (inRecovery) return { status: 'skip', detail: `${target} is a standby: it cannot take writes until promoted` };
        const id = randomUUID();
        await prisma.drCanary.create({ data: { id, instanceId: this.deps.instanceId } });
        const read = await prisma.drCanary.findUnique({ where: { id } });
        await prisma.drCanary.delete({ where: { id } });
        if (!read) throw new Error('the canary row written was not read back');
        return { status: 'pass', detail: 'a canary row was written, read back and deleted' };
      }),
    );
    checks.push(
      await timed('migrations_up_to_date', async () => {
        const files = await readMigrations(this.deps.migrationsDir);
        const rows = await prisma.$queryRawUnsafe<{ migration_name: string }[]>(
          'SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
        );
        const applied = new Set(rows.map((r) => r.migration_name));
        const missing = files.filter((f) => !applied.has(f.name)).map((f) => f.name);
        if (missing.length > 0) throw new Error(`not applied: ${missing.join(', ')}`);
        return { status: 'pass', detail: `all ${files.length} migrations applied` };
      }),
    );
    const seen: { fresh?: FreshReplication; follows?: { follows: boolean; why: string } } = {};
    checks.push(
      await timed('replication_status', async () => {
        const fresh = (seen.fresh = await this.deps.replication());
        if (!fresh) return { status: 'skip', detail: 'no replica configured' };
        const replication = fresh.report;
        const follows = (seen.follows = standbyFollows(fresh));
        const detail = `${replication.direction}: state ${replication.state}, lag ${replication.lagSeconds ?? 'unknown'} s, ${replication.lagBytes ?? 'unknown'} bytes`;
        if (replication.state === 'promoted')
          return {
            status: 'pass',
            detail: `${detail}: ${replication.writer} was promoted; rebuild ${replication.standby} as a standby (rebuild-primary.sh)`,
          };
        if (!follows.follows) return { status: 'fail', detail: `${detail}: ${follows.why}` };
        return { status: replication.status === 'healthy' ? 'pass' : 'fail', detail };
      }),
    );
    const replication = seen.fresh?.report;
    const ok = checks.every((c) => c.status !== 'fail');
    return {
      status: ok ? 'pass' : 'fail',
      target,
      ...(replication
        ? {
            roles: replication.roles,
            direction: replication.direction,
            replication: {
              state: replication.state,
              writer: replication.writer,
              standby: replication.standby,
              lagSeconds: replication.lagSeconds,
              lagBytes: replication.lagBytes,
              standbyFollows: seen.follows?.follows ?? false,
              why: seen.follows?.why ?? null,
            },
          }
        : {}),
      checks,
    };
  }
}
