import request from 'supertest';
import type { PgBackRestRepo } from '../../support/pgbackrest-repo.ts';
import { eventually } from '../../support/common.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startBackupWorld, type BackupWorld } from '../support/world.ts';

const op = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
/** Small enough to pass within the test, far below the 26 h default the rule used to apply. */
const MAX_AGE_SECONDS = 12;

interface Assessment {
  severity: string | null;
  rule: string | null;
  reason: string;
  rules: { rule: string; severity: string; matched: boolean; evidence: string }[];
}

describe('POST /admin/incidents/assess: "backups stale" follows BACKUP_MAX_AGE, on a real pgBackRest repository', () => {
  let world: BackupWorld;
  let repo: PgBackRestRepo;
  let api: TestInstance;

  beforeAll(async () => {
    world = await startBackupWorld({
      bucket: 'stale-media',
      env: {
        BACKUP_MAX_AGE: `${MAX_AGE_SECONDS}s`,
        BACKUP_STATUS_INTERVAL_MS: '60000',
        PGBACKREST_INFO_CACHE_MS: '0',
        HEALTH_INTERVAL_MS: '500',
      },
    });
    repo = world.repo;
    api = await world.start(repo.env);
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
  });

  const assess = async () => {
    const res = await request(api.url).post('/admin/incidents/assess').set(op).send({});
    expect(res.status).toBe(200);
    return res.body as Assessment;
  };
  const staleRule = (a: Assessment) => a.rules.find((r) => r.rule === 'backups_stale')!;

  it('no successful backup yet: P2, backups_stale', async () => {
    await api.service.backups.inventory.sample();
    // (On a loaded machine a media probe may time out now and then: P1 wins while it does.)
    const a = await eventually(assess, (x) => x.rule === 'backups_stale', 20_000);
    expect(a).toMatchObject({ severity: 'P2', rule: 'backups_stale' });
    expect(staleRule(a).evidence).toBe(`no successful backup yet (limit ${MAX_AGE_SECONDS} s)`);
  }, 30_000);

  it('a fresh full backup clears it; once it is older than BACKUP_MAX_AGE it is P2 again, naming the rule and the configured limit', async () => {
    await repo.exec(['backup', '--type=full']);
    await api.service.backups.inventory.sample();
    const metrics = (await request(api.url).get('/metrics')).text;
    expect(metrics).toContain(`sav3_backup_max_age_seconds ${MAX_AGE_SECONDS}`);
    const fresh = await assess();
    const age = Number(/newest backup (\d+) s old/.exec(staleRule(fresh).evidence)?.[1]);
    // Only a machine stalled for longer than the limit between the backup and here could see it stale.
    expect(age).toBeLessThan(MAX_AGE_SECONDS);
    expect(staleRule(fresh)).toMatchObject({ matched: false, evidence: `newest backup ${age} s old (limit ${MAX_AGE_SECONDS} s)` });
    expect(fresh.rule).not.toBe('backups_stale');

    const stale = await eventually(assess, (x) => x.rule === 'backups_stale', (MAX_AGE_SECONDS + 20) * 1000);
    expect(stale).toMatchObject({ severity: 'P2', rule: 'backups_stale' });
    const staleAge = Number(/newest backup (\d+) s old/.exec(stale.reason)?.[1]);
    expect(staleAge).toBeGreaterThan(MAX_AGE_SECONDS);
    expect(stale.reason).toBe(`backups_stale: newest backup ${staleAge} s old (limit ${MAX_AGE_SECONDS} s)`);
    // The first matching rule wins: every more severe one passed.
    expect(
      stale.rules
        .slice(
          0,
          stale.rules.findIndex((r) => r.rule === 'backups_stale'),
        )
        .every((r) => !r.matched),
    ).toBe(true);
  }, 60_000);
});
