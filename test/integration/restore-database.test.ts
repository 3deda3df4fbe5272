import { sql } from '../support/dr-scripts.ts';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { loadConfig } from '../../src/config/config.ts';
import { RestoreJournal } from '../../src/services/backup/restore-reporter.ts';
import { MinioObjectStore } from '../../src/adapters/minio-object-store.ts';
import type { PgCluster } from '../../support/pg-cluster.ts';
import type { PgBackRestRepo } from '../../support/pgbackrest-repo.ts';
import { startDoctoredApi } from '../support/http.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { mediaEnv, OPERATOR_TOKEN, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { archiveAll, restoreScript, restoreScriptEnv } from '../support/restore-script.ts';
import { startBackupWorld, type BackupWorld } from '../support/world.ts';
import { eventually, sha256Hex } from '../../support/common.ts';

const SCRIPT = join(__dirname, '..', '..', 'scripts', 'dr', 'restore-database.sh');
const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/** Runs the script, calling `onLine` with each line of its output as it comes. */
function scriptLive(
  args: string[],
  env: Record<string, string>,
  onLine: (line: string) => void,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [SCRIPT, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env } });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) onLine(line);
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

const script = (args: string[], env: Record<string, string>) => restoreScript(args, env, 180_000);

describe('scripts/dr/restore-database.sh on a real primary with pgBackRest', () => {
  let world: BackupWorld;
  let cluster: PgCluster;
  let repo: PgBackRestRepo;
  let api: TestInstance;
  let env: Record<string, string>;
  // Every run's report journal in one place of its own (not ./.sav3 of the checkout).
  const journalRoot = mkdtempSync(join(tmpdir(), 'sav3-restore-journals-'));
  const acked = new Map<string, string>();

  const upload = async (key: string) => {
    const body = randomBytes(700);
    const res = await request(api.url).put(`/media/${key}`).send(body);
    expect(res.status).toBe(201);
    acked.set(key, sha256Hex(body));
  };
  const expectBack = async (keys: string[]) => {
    for (const key of keys) {
      const res = await request(api.url)
        .get(`/media/${key}`)
        .buffer(true)
        .parse((r, cb) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => cb(null, Buffer.concat(chunks)));
        });
      expect({ key, status: res.status, sha: sha256Hex(res.body as Buffer) }).toEqual({ key, status: 200, sha: acked.get(key) });
    }
  };

  beforeAll(async () => {
    world = await startBackupWorld({ bucket: 'restore-primary', env: { MEDIA_CACHE_TTL_SECONDS: '1', HEALTH_TIMEOUT_MS: '500' } });
    ({ cluster, repo } = world);
    api = await world.start();
    await upload('r/before-backup');
    await repo.exec(['backup', '--type=full']);
    env = { ...restoreScriptEnv(world, api, journalRoot), ...mediaEnv('PRIMARY', world.s3) };
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
    rmSync(journalRoot, { recursive: true, force: true });
  });

  it('--help prints usage and does nothing; unknown options and a missing --confirm exit 2 and change nothing', async () => {
    const help = await script(['--help'], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: scripts/dr/restore-database.sh');
    expect((await script(['--from-backup', 'latest', '--force'], env)).code).toBe(2);
    const noConfirm = await script(['--from-backup', 'latest'], env);
    expect(noConfirm.code).toBe(2);
    expect(noConfirm.stderr).toContain('without --confirm');
    expect((await script(['--from-backup', 'latest', '--target-time', 'yesterday', '--dry-run'], env)).code).toBe(2);
    expect(
      (await script(['--from-backup', 'latest', '--target-time', '2026-01-01T00:00:00Z', '--target-name', 'x', '--confirm'], env)).code,
    ).toBe(2);
    // The server kept running and the data is as it was.
    expect(await sql(cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects')).toEqual([{ n: 1 }]);
    expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(false);
  });

  it('--dry-run prints the backup and WAL it would use; one that cannot go ahead exits 1', async () => {
    const dry = await script(['--from-backup', 'latest', '--dry-run'], env);
    expect(dry.code).toBe(0);
    const plan = JSON.parse(
      dry.stdout
        .split('\n')
        .find((l) => l.startsWith('plan: '))!
        .slice(6),
    );
    expect(plan).toMatchObject({
      backup: { label: expect.stringMatching(/F$/), type: 'full' },
      target: { type: 'end_of_archive' },
      wal: { from: expect.stringMatching(/^[0-9A-F]{24}$/), to: expect.stringMatching(/^[0-9A-F]{24}$/) },
    });
    expect(dry.stdout).toContain('nothing was changed');
    expect((await script(['--from-backup', '20200101-000000F', '--dry-run'], env)).code).toBe(1);
    const early = await script(['--from-backup', 'latest', '--target-time', '2001-01-01T00:00:00Z', '--dry-run'], env);
    expect(early.code).toBe(1);
    expect(early.stderr).toContain('no backup ended before');
  });

  it("POST /admin/verify/database probes replication now, not the last health probe's result (a replica gone since says fail)", async () => {
    // Background probes every 10 minutes: only the one at start-up is cached.
    const paired = await world.start({ DATABASE_REPLICA_URL: cluster.replica.url(), HEALTH_INTERVAL_MS: '600000' });
    const replicationCheck = async () => {
      const res = await request(paired.url).post('/admin/verify/database').set(auth).send({});
      return {
        status: res.status,
        check: (res.body.checks as { name: string; status: string; detail: string }[]).find((c) => c.name === 'replication_status'),
      };
    };
    try {
      expect(await replicationCheck()).toMatchObject({ status: 200, check: { status: 'pass' } });
      await cluster.replica.stop('fast');
      expect(await replicationCheck()).toMatchObject({
        status: 503,
        check: { status: 'fail', detail: expect.stringContaining('replica does not answer') },
      });
    } finally {
      await cluster.replica.start();
      await paired.stop();
    }
  }, 60_000);

  it('a DELETE without WHERE, undone by a restore to a restore point: every acknowledged upload is back; the API answered throughout', async () => {
    await upload('r/after-backup-1');
    await upload('r/after-backup-2');
    expect((await request(api.url).post('/admin/database/restore-point').set(auth).send({ name: 'before-mistake-1' })).status).toBe(201);
    await sql(cluster.primary.url(), 'DELETE FROM media_objects');
    await archiveAll(world);
    // While the restore runs, the API keeps answering: writes 503 with Retry-After, health/live 200.
    const seen: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const w = await request(api.url)
          .put('/media/r/during')
          .send('x')
          .catch(() => undefined);
        if (w) seen.push(w.status);
        if (w && w.status === 503) expect(w.headers['retry-after']).toBeDefined();
        expect((await request(api.url).get('/health/live')).status).toBe(200);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    // The restore goes through an instance that knows the replica: it must be told apart from the primary.
    const paired = await world.start({ DATABASE_REPLICA_URL: cluster.replica.url() });
    const run = await script(['--from-backup', 'latest', '--target-name', 'before-mistake-1', '--confirm'], {
      ...env,
      SAV3_API_URL: paired.url,
      SAV3_REPLICA_WAIT_SECONDS: '5',
    });
    await paired.stop();
    polling = false;
    await poller;
    // Success is the restored primary verified; the replica, which replayed the DELETE on the old
    // timeline, cannot follow and is reported on a line of its own (exit 0 whatever its timing).
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.stdout).toContain('primary: the restored primary passed the verification');
    expect(run.stdout).toMatch(/^replica: MUST BE REBUILT: it does not follow the restored primary \(.+\).*rebuild-primary\.sh/m);
    for (const step of ['read-only on', 'stop PostgreSQL', 'pgbackrest restore', 'start PostgreSQL', 'wait for promotion', 'verify'])
      expect(run.stdout).toMatch(new RegExp(`step: ${step} \\d+ ms`));
    // Writes before read-only took effect were accepted (they come after the restore point);
    // from the first refusal on, every write was refused with 503, none failed otherwise.
    const firstRefusal = seen.indexOf(503);
    expect(firstRefusal).toBeGreaterThanOrEqual(0);
    expect(seen.slice(0, firstRefusal).every((s) => s === 201)).toBe(true);
    expect(seen.slice(firstRefusal).every((s) => s === 503)).toBe(true);
    expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(true);
    await expectBack(['r/before-backup', 'r/after-backup-1', 'r/after-backup-2']);
    expect((await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'restored' })).status).toBe(200);
    const write = await request(api.url).put('/media/r/after-restore').send('x');
    expect({ status: write.status, body: write.body }).toEqual({ status: 201, body: expect.anything() });
  }, 120_000);

  it('undone by a restore to a time: what came before is back, what came after is reported (content without metadata)', async () => {
    await upload('r/before-target');
    await new Promise((r) => setTimeout(r, 200));
    const target = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 200));
    await upload('r/after-target');
    await sql(cluster.primary.url(), "DELETE FROM media_objects WHERE key LIKE 'r/%'");
    await archiveAll(world);
    const run = await script(['--from-backup', 'latest', '--target-time', target, '--confirm'], env);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    await expectBack(['r/before-backup', 'r/after-backup-1', 'r/after-backup-2', 'r/before-target']);
    // Reported, not silently lost: the content of the upload after the target (and of any write the
    // first restore accepted before read-only took effect) is listed as content without metadata.
    const orphans = run.stdout
      .split('\n')
      .filter((l) => l.startsWith('media-orphan: '))
      .map((l) => JSON.parse(l.slice(14)) as { object: string; backend: string; size: number });
    expect(run.stdout).toContain(`media: ${orphans.length} object(s) uploaded after the target`);
    expect(orphans.every((o) => o.backend === 'primary' && /^v\/[0-9a-f-]{36}$/.test(o.object))).toBe(true);
    const store = new MinioObjectStore(loadConfig({ DATABASE_URL: cluster.primary.url(), ...mediaEnv('PRIMARY', world.s3) }).mediaPrimary);
    const orphanShas = new Set<string>();
    for (const o of orphans) {
      const chunks: Buffer[] = [];
      for await (const c of await store.get(o.object)) chunks.push(c as Buffer);
      orphanShas.add(sha256Hex(Buffer.concat(chunks)));
    }
    store.close();
    expect(orphanShas.has(acked.get('r/after-target')!)).toBe(true);
    expect((await request(api.url).get('/media/r/after-target')).status).toBe(404);
    expect(await sql(cluster.primary.url(), "SELECT key FROM media_objects WHERE key = 'r/after-target'")).toEqual([]);
  }, 120_000);

  // --- The restore as an audited DR action on the incident timeline --------------------------

  const STEPS = ['read-only on', 'stop PostgreSQL', 'pgbackrest restore', 'start PostgreSQL', 'wait for promotion', 'verify'];
  interface Entry {
    at: string;
    kind: string;
    message: string;
    durationMs: number | null;
    detail: {
      action: string;
      result: string;
      detail: { step?: string; restoreId?: string; reportedLate?: boolean; steps?: { step: string; ms: number }[]; error?: string };
    };
  }
  const openIncident = async (title: string) => {
    const res = await request(api.url)
      .post('/admin/incidents')
      .set(auth)
      .send({ severity: 'P1', title, components: ['database'], summary: 'restoring the database from backup' });
    expect(res.status).toBe(201);
    return res.body.id as string;
  };
  const resolveIncident = async (id: string) => {
    expect(
      (
        await request(api.url)
          .post(`/admin/incidents/${id}/updates`)
          .set(auth)
          .send({ message: 'restored', visibility: 'public', status: 'resolved' })
      ).status,
    ).toBe(201);
  };
  const restoreEntries = async (id: string) => {
    const full = await request(api.url).get(`/admin/incidents/${id}`).set(auth);
    expect(full.status).toBe(200);
    return (full.body.timeline as Entry[]).filter((e) => e.kind === 'dr_action' && e.detail.action.startsWith('database.restore'));
  };
  const printedSteps = (stdout: string) => new Map([...stdout.matchAll(/^step: (.+) (\d+) ms$/gm)].map((m) => [m[1]!, Number(m[2])]));
  /**
   * start, one entry per step with the step's printed time, in order; the outcome with the whole
   * duration (placed at the restore's start, like every entry at its action's start).
   */
  const expectRestoreOnTimeline = (all: Entry[], stdout: string, result: 'success' | 'failed') => {
    const printed = printedSteps(stdout);
    const outcome = all.find((e) => e.detail.action === 'database.restore')!;
    expect(outcome?.detail.result).toBe(result);
    const entries = all.filter((e) => e !== outcome);
    expect(entries.map((e) => `${e.detail.action}${e.detail.detail.step ? ` (${e.detail.detail.step})` : ''}:${e.detail.result}`)).toEqual([
      'database.restore.start:success',
      ...STEPS.map((step) => `database.restore.step (${step}):success`),
    ]);
    expect(all).toHaveLength(8);
    const restoreIds = new Set(entries.map((e) => e.detail.detail.restoreId));
    expect(restoreIds.size).toBe(1);
    for (const e of entries.filter((x) => x.detail.action === 'database.restore.step')) {
      expect(e.durationMs).toBe(printed.get(e.detail.detail.step!));
      expect(e.message).toBe(`database.restore.step (${e.detail.detail.step}) success by ops`);
    }
    const sum = [...printed.values()].reduce((a, b) => a + b, 0);
    expect(outcome.durationMs).toBeGreaterThanOrEqual(sum);
    expect(outcome.detail.detail.steps).toEqual(STEPS.map((step) => ({ step, ms: printed.get(step) })));
    // Each entry sits at the time its step started: a step starts where the one before ended
    // (within the tool's own work between two steps, which a loaded machine stretches).
    const times = entries.map((e) => Date.parse(e.at));
    for (let i = 2; i < times.length; i += 1) {
      const gap = times[i]! - (times[i - 1]! + entries[i - 1]!.durationMs!);
      expect(gap).toBeGreaterThan(-50);
      expect(gap).toBeLessThan(1000);
    }
    expect(Math.abs(Date.parse(outcome.at) - times[0]!)).toBeLessThan(50);
    return outcome;
  };

  it('a restore while an incident is open joins its timeline as database.restore: start, every step with its time, the outcome; the post-mortem lists them', async () => {
    const journals = mkdtempSync(join(journalRoot, 'j-'));
    const id = await openIncident('Restore from backup');
    await archiveAll(world); // the incident itself must survive a restore to the end of the archive
    const run = await script(['--from-backup', 'latest', '--confirm'], { ...env, SAV3_RESTORE_JOURNAL_DIR: journals });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(/report: the API took all 8 report\(s\) of restore [0-9a-f-]{36}/);
    expect(run.stdout).not.toContain('did not take');
    // Reports sent while PostgreSQL was stopped wait in the audit spool and join when it is back.
    const entries = await eventually(
      () => restoreEntries(id),
      (e) => e.length >= 8,
      20_000,
    );
    const outcome = expectRestoreOnTimeline(entries, run.stdout, 'success');
    expect(outcome.message).toBe('database.restore success by ops');
    // Everything was taken: the local journal holds nothing unsent.
    const [journal] = RestoreJournal.all(journals);
    expect(journal!.pending()).toEqual([]);
    expect(journal!.restoreId).toBe(entries[0]!.detail.detail.restoreId);

    const pm = await request(api.url)
      .get(`/admin/incidents/${id}/postmortem`)
      .set({ Authorization: `Bearer ${VIEWER_TOKEN}` });
    expect(pm.status).toBe(200);
    expect(pm.text).toMatch(/\| database\.restore\.start \| success \| ops \| — \|/);
    for (const step of STEPS)
      expect(pm.text).toMatch(new RegExp(`\\| database\\.restore\\.step \\(${step}\\) \\| success \\| ops \\| (\\d+ ms|\\d+ s) \\|`));
    expect(pm.text).toMatch(/\| database\.restore \| success \| ops \| (\d+ ms|\d+ s) \|/);
    expect(pm.text).toContain(`(${printedSteps(run.stdout).get('pgbackrest restore')} ms)`);
    await resolveIncident(id);
    rmSync(journals, { recursive: true, force: true });
  }, 120_000);

  it("answers that are not the API's (a proxy's HTML page): read-only not confirmed stops the restore before anything is changed", async () => {
    const html = await startDoctoredApi(api.url, () => ({ status: 200, body: '<html>ok</html>' }));
    const readOnlyBefore = (await request(api.url).get('/admin/read-only').set(auth)).body.enabled;
    try {
      const run = await script(['--from-backup', 'latest', '--confirm'], { ...env, SAV3_API_URL: html.url });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('read-only on was not confirmed by the API: HTTP 200 <html>ok</html>');
      expect(run.stdout).not.toContain('step: stop PostgreSQL');
      expect(run.stdout).not.toContain('read-only mode is still ON');
      expect(await sql(cluster.primary.url(), 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: false }]);
      expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(readOnlyBefore);
    } finally {
      await html.close();
    }
  }, 60_000);

  it('a verification answered with {} is no verification: the restore fails (exit 1) and says PostgreSQL is up but not verified', async () => {
    await archiveAll(world);
    const empty = await startDoctoredApi(api.url, (method, path) =>
      path === '/admin/verify/database' ? { status: 200, body: '{}', contentType: 'application/json' } : undefined,
    );
    try {
      const run = await script(['--from-backup', 'latest', '--confirm'], { ...env, SAV3_API_URL: empty.url });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('no verification through the API (not a verification report: HTTP 200 {})');
      expect(run.stdout).toMatch(/step: verify failed after \d+ ms/);
      expect(run.stdout).toContain('and promoted (it is UP), but it was not verified through the API; read-only mode is still ON');
      expect(run.stdout).not.toContain('PostgreSQL on this host is DOWN');
      expect(run.stdout).not.toMatch(/^total: /m);
      expect((await request(api.url).get('/admin/read-only').set(auth)).body.enabled).toBe(true);
    } finally {
      await empty.close();
      await request(api.url).put('/admin/read-only').set(auth).send({ enabled: false, reason: 'test done' });
    }
  }, 120_000);

  let proxy: TcpProxy | undefined;
  afterAll(async () => {
    await proxy?.close();
  });

  it('the API unreachable in the middle of a restore: the restore goes on, records locally, says so, and reports when the API is back (a resent report counts once)', async () => {
    proxy ??= await startTcpProxy(Number(new URL(api.url).port));
    proxy.setMode('pass');
    const journals = mkdtempSync(join(journalRoot, 'j-'));
    const id = await openIncident('Restore, API flapping');
    await archiveAll(world);
    const run = await scriptLive(
      ['--from-backup', 'latest', '--confirm'],
      { ...env, SAV3_API_URL: `http://127.0.0.1:${proxy.port}`, SAV3_RESTORE_JOURNAL_DIR: journals },
      (line) => {
        if (line.startsWith('step: read-only on ')) proxy!.setMode('refuse');
        // Back before the verification, which needs the API.
        if (line.startsWith('step: start PostgreSQL ')) proxy!.setMode('pass');
      },
    );
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.stdout).toContain('report: the API did not take the restore report');
    expect(run.stdout).toContain('the restore goes on and records locally');
    expect(run.stdout).toMatch(/report: the API took all 8 report\(s\)/);
    const entries = await eventually(
      () => restoreEntries(id),
      (e) => e.length >= 8,
      20_000,
    );
    expectRestoreOnTimeline(entries, run.stdout, 'success');
    // Sent after the API came back, at the time it happened on the database host.
    expect(entries.find((e) => e.detail.detail.step === 'pgbackrest restore')!.detail.detail.reportedLate).toBe(true);
    // Exactly once in the audit log, even the report cut off mid-request and sent again.
    const audit = await request(api.url).get('/admin/audit?limit=200').set(auth);
    const mine = (audit.body.events as { action: string; detail: { restoreId?: string } | null }[]).filter(
      (e) => e.detail?.restoreId === entries[0]!.detail.detail.restoreId,
    );
    expect(mine).toHaveLength(8);
    await resolveIncident(id);
    rmSync(journals, { recursive: true, force: true });
  }, 120_000);

  it('the API unreachable for the whole run: the restore stops at read-only (nothing changed), its reports wait in the journal until --report-pending sends them', async () => {
    proxy ??= await startTcpProxy(Number(new URL(api.url).port));
    proxy.setMode('refuse');
    const journals = mkdtempSync(join(journalRoot, 'j-'));
    const id = await openIncident('Restore attempt without the API');
    const before = await sql(cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects');
    const run = await script(['--from-backup', 'latest', '--confirm'], {
      ...env,
      SAV3_API_URL: `http://127.0.0.1:${proxy!.port}`,
      SAV3_RESTORE_JOURNAL_DIR: journals,
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('restore failed: ');
    expect(run.stdout).toMatch(/step: read-only on failed after \d+ ms/);
    expect(run.stdout).not.toMatch(/step: stop PostgreSQL/);
    expect(run.stdout).toMatch(
      /report: the API did not take 3 report\(s\) of restore [0-9a-f-]{36} \(connection failed: [^()]+ \([A-Z_]+\)\); they are recorded in .*--report-pending/,
    );
    expect(await sql(cluster.primary.url(), 'SELECT count(*)::int AS n FROM media_objects')).toEqual(before);
    expect(
      RestoreJournal.all(journals)[0]!
        .pending()
        .map((r) => `${r.event}:${r.result}`),
    ).toEqual(['started:success', 'step:failed', 'finished:failed']);

    // Still unreachable: --report-pending says so and keeps them.
    const still = await script(['--report-pending'], {
      ...env,
      SAV3_API_URL: `http://127.0.0.1:${proxy!.port}`,
      SAV3_RESTORE_JOURNAL_DIR: journals,
    });
    expect(still).toEqual({ code: 1, stdout: expect.stringMatching(/0 sent, 0 refused, 3 still unsent/), stderr: '' });
    expect(still.stdout).toMatch(/0 sent, 0 refused, 3 still unsent/);
    proxy!.setMode('pass');
    const sent = await script(['--report-pending'], {
      ...env,
      SAV3_API_URL: `http://127.0.0.1:${proxy!.port}`,
      SAV3_RESTORE_JOURNAL_DIR: journals,
    });
    expect({ code: sent.code, stderr: sent.stderr }).toEqual({ code: 0, stderr: '' });
    expect(sent.stdout).toMatch(/3 sent, 0 refused, 0 still unsent/);
    const again = await script(['--report-pending'], {
      ...env,
      SAV3_API_URL: `http://127.0.0.1:${proxy!.port}`,
      SAV3_RESTORE_JOURNAL_DIR: journals,
    });
    expect(again.stdout).toContain('report: nothing to send');

    const entries = await eventually(
      () => restoreEntries(id),
      (e) => e.length >= 3,
      10_000,
    );
    // (The outcome sits at the restore's start, beside the start entry: compared unordered.)
    expect(entries.map((e) => `${e.detail.action}:${e.detail.result}:${e.detail.detail.reportedLate === true}`).sort()).toEqual(
      ['database.restore.start:success:true', 'database.restore.step:failed:true', 'database.restore:failed:true'].sort(),
    );
    const failedStep = entries.find((e) => e.detail.action === 'database.restore.step')!;
    expect(failedStep.message).toBe('database.restore.step (read-only on) failed by ops');
    expect(failedStep.detail.detail).toMatchObject({ step: 'read-only on', error: expect.stringContaining('connection failed: ') });
    expect(typeof failedStep.durationMs).toBe('number');
    await resolveIncident(id);
    rmSync(journals, { recursive: true, force: true });
  }, 120_000);

  it('POST /admin/database/restores: bad reports 400, a viewer 403, no token 401; nothing recorded', async () => {
    const good = {
      restoreId: randomUUID(),
      seq: 0,
      event: 'started',
      at: new Date().toISOString(),
      result: 'success',
      plan: { backup: '20260101-000000F', target: { type: 'end_of_archive' } },
    };
    const post = (body: unknown, headers: Record<string, string> = auth) =>
      request(api.url)
        .post('/admin/database/restores')
        .set(headers)
        .send(body as object);
    expect((await post({ ...good, restoreId: 'x' })).status).toBe(400);
    expect((await post({ ...good, event: 'paused' })).status).toBe(400);
    expect((await post({ ...good, extra: 1 })).status).toBe(400);
    expect((await post({ ...good, at: new Date(Date.now() + 3600_000).toISOString() })).status).toBe(400);
    expect((await post({ ...good, plan: undefined })).status).toBe(400);
    expect((await post({ ...good, event: 'step', step: 'rm -rf', durationMs: 1 })).status).toBe(400);
    expect((await post(good, { Authorization: `Bearer ${VIEWER_TOKEN}` })).status).toBe(403);
    expect((await post(good, {})).status).toBe(401);
    const audit = await request(api.url).get('/admin/audit?limit=200').set(auth);
    expect(
      (audit.body.events as { detail: { restoreId?: string } | null }[]).filter((e) => e.detail?.restoreId === good.restoreId),
    ).toEqual([]);
    // The same report twice is one event.
    const first = await post(good);
    const second = await post(good);
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.body.event.id).toBe(first.body.event.id);
    const after = await request(api.url).get('/admin/audit?limit=200').set(auth);
    expect(
      (after.body.events as { detail: { restoreId?: string } | null }[]).filter((e) => e.detail?.restoreId === good.restoreId),
    ).toHaveLength(1);
  });
});
