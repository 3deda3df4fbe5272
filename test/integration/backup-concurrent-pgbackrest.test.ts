// Two backups at once (the job group's Redis lock lost, e.g. a Redis restart): pgBackRest's own
// lock refuses the second one cleanly, with a message saying so; the repository stays sound.
import pg from 'pg';
import { PgBackRestCli } from '../../src/services/backup/pgbackrest.ts';
import { startPgCluster, type PgCluster } from '../../support/pg-cluster.ts';
import { createPgBackRestRepo, type PgBackRestRepo } from '../../support/pgbackrest-repo.ts';

describe('two pgBackRest backups at once on a real repository', () => {
  let cluster: PgCluster;
  let repo: PgBackRestRepo;
  let cli: PgBackRestCli;

  beforeAll(async () => {
    cluster = await startPgCluster();
    repo = await createPgBackRestRepo(cluster.primary, cluster.dir);
    const client = new pg.Client({ connectionString: cluster.primary.url() });
    await client.connect();
    // Enough data that the first backup is still running when the second starts.
    await client.query('CREATE TABLE filler AS SELECT g, md5(g::text) AS t FROM generate_series(1, 400000) g');
    await client.end();
    cli = new PgBackRestCli({
      bin: 'pgbackrest',
      stanza: repo.stanza,
      configPath: repo.configPath,
      runAs: process.getuid?.() === 0 ? 'postgres' : undefined,
    });
  }, 90_000);
  afterAll(async () => {
    await cluster?.destroy();
    repo?.destroy();
  });

  it('one succeeds; the other is refused with a clear message; the repository lists one good backup and checks clean', async () => {
    const results = await Promise.allSettled([
      cli.backup('full', 120_000),
      new Promise((r) => setTimeout(r, 300)).then(() => cli.backup('full', 120_000)),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(1);
    expect(refused).toHaveLength(1);
    expect(refused[0]!.reason).toMatchObject({
      code: 'pgbackrest_failed',
      message: 'another pgBackRest backup of this stanza is running (its lock is held): this one was refused and changed nothing',
    });
    const info = await cli.info(30_000);
    expect(info.backups.map((b) => ({ type: b.type, error: b.error }))).toEqual([{ type: 'full', error: false }]);
    await repo.exec(['check']);
  }, 120_000);
});
