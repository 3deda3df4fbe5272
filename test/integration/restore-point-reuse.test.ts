// Found by an outside attack on issue 13: a restore point name taken again after a restore to it
// (the next restore to the name went to the OLD point), a name written twice in the WAL, and a
// pgBackRest restore killed halfway (the way back the script printed did not work).
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { lsnValue } from '../../src/services/backup/wal-scan.ts';
import { sql } from '../support/dr-scripts.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { archiveAll, restoreScript, restoreScriptEnv } from '../support/restore-script.ts';
import { startBackupWorld, type BackupWorld } from '../support/world.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const script = (args: string[], env: Record<string, string>) => restoreScript(args, env, 150_000);

describe('restore points and interrupted restores (real pgBackRest)', () => {
  let world: BackupWorld;
  let api: TestInstance;
  let env: Record<string, string>;
  const root = mkdtempSync(join(tmpdir(), 'sav3-rp-reuse-'));
  const count = async () => (await sql<{ n: number }>(world.cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects'))[0]!.n;
  const readOnlyOff = () => request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'test done' });

  beforeAll(async () => {
    world = await startBackupWorld({ bucket: 'rp-reuse', env: { HEALTH_TIMEOUT_MS: '500' } });
    api = await world.start();
    await world.repo.exec(['backup', '--type=full']);
    env = restoreScriptEnv(world, api, join(root, 'journals'));
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
    rmSync(root, { recursive: true, force: true });
  });

  it('after a restore to a point its name stays taken (409), and the restored database lists it', async () => {
    expect((await request(api.url).put('/media/rp/before').send('before')).status).toBe(201);
    const point = await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'rp1' });
    expect(point.status).toBe(201);
    for (const key of ['rp/a', 'rp/b', 'rp/c']) expect((await request(api.url).put(`/media/${key}`).send(key)).status).toBe(201);
    await archiveAll(world);
    const run = await script(['--from-backup', 'latest', '--target-name', 'rp1', '--confirm'], env);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await count()).toBe(1);
    // The row was committed before the point: recovery to the point keeps it.
    expect(await sql(world.cluster.primary.url(), "SELECT name FROM restore_points WHERE name = 'rp1'")).toEqual([{ name: 'rp1' }]);
    await readOnlyOff();
    const again = await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'rp1' });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('restore_point_exists');
  }, 150_000);

  it('a name written twice in the WAL recovery would replay is refused, naming each point, before anything is done', async () => {
    const first = await sql<{ lsn: string }>(world.cluster.primary.url(), "SELECT pg_create_restore_point('twice')::text AS lsn");
    expect((await request(api.url).put('/media/rp/between').send('between')).status).toBe(201);
    const second = await sql<{ lsn: string }>(world.cluster.primary.url(), "SELECT pg_create_restore_point('twice')::text AS lsn");
    await archiveAll(world);
    const rows = await count();
    for (const mode of ['--dry-run', '--confirm']) {
      const run = await script(['--from-backup', 'latest', '--target-name', 'twice', mode], env);
      expect({ mode, code: run.code }).toEqual({ mode, code: 1 });
      expect(run.stderr).toContain('restore point twice appears 2 times in the WAL recovery');
      // pg_waldump names where each record begins; pg_create_restore_point answers where it ends.
      const named = [...run.stderr.matchAll(/(\d+\/[0-9A-F]{8}) after commits of/g)].map((m) => lsnValue(m[1]!));
      expect(named).toHaveLength(2);
      expect(named[0]! < lsnValue(first[0]!.lsn) && lsnValue(first[0]!.lsn) <= named[1]! && named[1]! < lsnValue(second[0]!.lsn)).toBe(
        true,
      );
      expect(run.stderr).toContain('recovery stops at the first');
      expect(run.stdout).not.toContain('step: ');
    }
    expect(await count()).toBe(rows);
  }, 90_000);

  it('a pgBackRest restore killed halfway: the failure says PostgreSQL cannot start, and the printed way back works', async () => {
    expect((await request(api.url).put('/media/rp/kept').send('kept')).status).toBe(201);
    await archiveAll(world);
    const rows = await count();
    const pgData = world.cluster.primary.dataDir;
    // Kills the real restore 0.12 s after it removed global/pg_control (or after 0.12 s at most 5 s on).
    const wrapper = join(root, 'pgbackrest-killed');
    writeFileSync(
      wrapper,
      `#!/bin/bash
case " $* " in *" restore "*) ;; *) exec pgbackrest "$@" ;; esac
setsid pgbackrest "$@" & pid=$!
for i in $(seq 1 500); do [ -e "${pgData}/global/pg_control" ] || break; sleep 0.01; done
sleep 0.12
kill -9 -- -$pid 2>/dev/null || kill -9 $pid
wait $pid
exit 1
`,
    );
    chmodSync(wrapper, 0o755);
    chmodSync(root, 0o755);
    const killed = await script(['--from-backup', 'latest', '--confirm'], { ...env, PGBACKREST_BIN: wrapper });
    expect(killed.code).toBe(1);
    expect(killed.stdout).toContain('step: pgbackrest restore failed');
    // What pgBackRest leaves: its manifest, and no control file.
    expect(existsSync(join(pgData, 'global', 'pg_control'))).toBe(false);
    expect(existsSync(join(pgData, 'backup.manifest'))).toBe(true);
    expect(killed.stdout).not.toContain('starting PostgreSQL brings back the data it held');
    expect(killed.stdout).not.toContain('pg_ctl');
    expect(killed.stdout).toMatch(/interrupted pgBackRest restore/);
    const next = killed.stdout.split('\n').find((l) => l.includes('restore to the end of the archive'))!;
    expect(next).toMatch(/--from-backup \d{8}-\d{6}F --timeline \d+ --confirm$/);
    const back = await script(
      next.slice(next.indexOf('scripts/dr/restore-database.sh') + 'scripts/dr/restore-database.sh '.length).split(' '),
      env,
    );
    expect({ code: back.code, stderr: back.stderr }).toEqual({ code: 0, stderr: '' });
    expect(back.stdout).toMatch(/data directory: .*interrupted pgBackRest restore/);
    expect(await count()).toBe(rows);
    await readOnlyOff();
  }, 150_000);
});
