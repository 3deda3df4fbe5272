// A hung pgBackRest keeps a backup job running while its worker lives (it heartbeats), and every
// other backup is refused until BACKUP_TIMEOUT_MS (6 h): the job is reported, with its age, never
// stopped for it (outside attack on #13, finding 8).
import { busyJobAsConflict } from '../../src/http/job-link.ts';
import { BackupService } from '../../src/services/backup/backup-service.ts';
import type { BackupInventory } from '../../src/services/backup/backup-inventory.ts';
import { humanSeconds, JobGroupBusyError, jobAgeSeconds, type Job, type JobQueue } from '../../src/services/jobs/job-queue.ts';

const job = (over: Partial<Job> = {}): Job => ({
  id: 'b0b0b0b0-0000-4000-8000-000000000000',
  kind: 'backup',
  status: 'running',
  input: { type: 'full' },
  result: null,
  error: null,
  group: 'backup',
  instanceId: 'worker-1',
  requestedBy: 'ops',
  createdAt: new Date(Date.now() - 2 * 3600_000 - 60_000).toISOString(),
  startedAt: new Date(Date.now() - 2 * 3600_000).toISOString(),
  updatedAt: new Date(Date.now() - 3000).toISOString(),
  finishedAt: null,
  ...over,
});

describe('a backup job holding the backup slot', () => {
  it('its age counts from its start (running) or its request (queued)', () => {
    const now = Date.parse('2026-11-26T12:00:00Z');
    const j = job({ startedAt: '2026-11-26T10:00:00.000Z', createdAt: '2026-11-26T09:59:00.000Z' });
    expect(jobAgeSeconds(j, now)).toBe(7200);
    expect(jobAgeSeconds({ ...j, status: 'queued', startedAt: null }, now)).toBe(7260);
    expect([humanSeconds(7205), humanSeconds(65), humanSeconds(4)]).toEqual(['2h 00m 05s', '1m 05s', '4s']);
  });

  it('the 409 names the job, how long it has run, where, and its last heartbeat', async () => {
    const held = job();
    const err = await busyJobAsConflict(async () => {
      throw new JobGroupBusyError('backup', held.id, held);
    }).catch((e: unknown) => e as Error & { status: number; extra: Record<string, unknown> });
    expect(err.status).toBe(409);
    expect(err.message).toMatch(/^a backup job is already running \(b0b0b0b0-[-0-9a-f]+\): for 2h 00m 0\ds, since .+ on worker-1$/);
    expect(err.extra.job).toEqual({
      id: held.id,
      href: `/admin/jobs/${held.id}`,
      kind: 'backup',
      status: 'running',
      startedAt: held.startedAt,
      instanceId: 'worker-1',
      lastHeartbeatAt: held.updatedAt,
      ageSeconds: expect.any(Number),
    });
    // Without the record (it could not be read) it names the job only, as before.
    const bare = await busyJobAsConflict(async () => {
      throw new JobGroupBusyError('backup', held.id);
    }).catch((e: unknown) => e as Error & { extra: Record<string, unknown> });
    expect(bare.message).toBe(`a backup job is already queued or running (${held.id})`);
    expect(bare.extra.job).toEqual({ id: held.id, href: `/admin/jobs/${held.id}` });
  });

  const service = (queue: Partial<JobQueue>, runningMaxSeconds?: number) =>
    new BackupService({
      inventory: {} as BackupInventory,
      queue: queue as JobQueue,
      activeDatabaseUrl: async () => 'postgresql://unused',
      timeoutMs: 1000,
      runningMaxSeconds,
    });

  it('GET /admin/backups `running`: the job, its age, overdue beyond BACKUP_RUNNING_MAX; null when none; undefined when Redis cannot say', async () => {
    const held = job();
    const queue = { holder: async () => held.id, get: async () => held };
    const running = await service(queue, 3600).runningBackup();
    expect(running).toMatchObject({
      job: { id: held.id, status: 'running', instanceId: 'worker-1', lastHeartbeatAt: held.updatedAt, input: { type: 'full' } },
      maxSeconds: 3600,
      overdue: true,
    });
    expect(running!.ageSeconds).toBeGreaterThanOrEqual(7200);
    expect((await service(queue, 3 * 3600).runningBackup())?.overdue).toBe(false);
    expect(await service({ holder: async () => null }).runningBackup()).toBeNull();
    expect(await service({ holder: async () => held.id, get: async () => ({ ...held, status: 'succeeded' }) }).runningBackup()).toBeNull();
    expect(
      await service({
        holder: async () => {
          throw new Error('Redis down');
        },
      }).runningBackup(),
    ).toBeUndefined();
  });
});
