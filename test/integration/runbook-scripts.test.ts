import http from 'node:http';
import { readdirSync } from 'node:fs';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, ownDatabase, startInstance, VIEWER_TOKEN, type TestInstance } from '../support/instance.ts';
import { SCRIPTS, script } from '../support/run-script.ts';
import { startDoctoredApi } from '../support/http.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';

describe('runbook scripts', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'runbook-scripts' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('enable, inspect and disable read-only mode, printing the server JSON', async () => {
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    const on = await script('enable-readonly-mode.sh', ['--reason', 'db "corrupted"', '--ttl', '600'], env);
    expect(on.code).toBe(0);
    expect(JSON.parse(on.stdout).readOnly).toMatchObject({ enabled: true, reason: 'db "corrupted"' });
    const state = await script('dr-state.sh', [], env);
    expect(JSON.parse(state.stdout).readOnly.enabled).toBe(true);
    const off = await script('disable-readonly-mode.sh', ['--reason', 'restored'], env);
    expect(off.code).toBe(0);
    expect(JSON.parse(off.stdout).readOnly.enabled).toBe(false);
  });

  it('exits non-zero on a refused change, a missing reason, a missing token or an unreachable API', async () => {
    const viewer = await script('enable-readonly-mode.sh', ['--reason', 'x'], { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: VIEWER_TOKEN });
    expect(viewer.code).toBe(1);
    expect(JSON.parse(viewer.stdout).error.code).toBe('forbidden');
    expect(viewer.stderr).toContain('HTTP 403');
    expect((await script('enable-readonly-mode.sh', [], { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN })).code).toBe(2);
    expect((await script('dr-state.sh', [], { SAV3_API_URL: api.url })).code).toBe(2);
    expect((await script('dr-state.sh', [], { SAV3_API_URL: 'http://127.0.0.1:1', SAV3_ADMIN_TOKEN: OPERATOR_TOKEN })).code).toBe(3);
  });
});

describe('database runbook scripts', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'runbook-db-scripts' });
    api = await startInstance(mediaEnv('PRIMARY', s3));
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('verify-database passes on a healthy primary; promote and switch report refusals with a non-zero exit', async () => {
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    const verify = await script('verify-database.sh', [], env);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout).status).toBe('pass');
    const promote = await script('promote-replica.sh', ['--max-lag', '10'], env);
    expect(promote.code).toBe(1);
    expect(JSON.parse(promote.stdout).error.checks[0]).toMatchObject({ name: 'replica_configured', ok: false });
    const dry = await script('promote-replica.sh', ['--dry-run'], env);
    expect(dry.code).toBe(1);
    expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, wouldPromote: false });
    const sw = await script('switch-database-connection.sh', ['--to', 'replica'], env);
    expect(sw.code).toBe(1);
    expect((await script('switch-database-connection.sh', ['--to', 'elsewhere'], env)).code).toBe(2);
    const same = await script('switch-database-connection.sh', ['--to', 'primary', '--dry-run'], env);
    expect(JSON.parse(same.stdout)).toMatchObject({ dryRun: true, wouldSwitch: false });
  });
});

describe('media runbook scripts', () => {
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let api: TestInstance;
  let db: Awaited<ReturnType<typeof ownDatabase>>;
  beforeAll(async () => {
    db = await ownDatabase();
    primary = await startS3Server({ bucket: 'runbook-media-primary' });
    backup = await startS3Server({ bucket: 'runbook-media-backup' });
    api = await startInstance({
      DATABASE_URL: db.url,
      ...mediaEnv('PRIMARY', primary),
      ...mediaEnv('BACKUP', backup),
      MEDIA_SYNC_INLINE_MAX: '1',
    });
  });
  afterAll(async () => {
    await api.stop();
    await primary.destroy();
    await backup.destroy();
    await db.drop();
  });

  it('switch to s3-backup, verify, sync (following the job), switch back', async () => {
    const env = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
    for (const n of [1, 2, 3]) expect((await fetch(`${api.url}/media/rb/${n}`, { method: 'PUT', body: `object ${n}` })).status).toBe(201);
    const sw = await script('switch-media-backend.sh', ['--to', 's3-backup'], env);
    expect(sw.code).toBe(0);
    expect(JSON.parse(sw.stdout)).toMatchObject({ changed: true, to: 'backup' });
    const verify = await script('verify-media-access.sh', [], env);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout).status).toBe('pass');
    const sync = await script('sync-media-files.sh', ['--from', 'primary', '--to', 's3-backup'], env);
    expect(sync.code).toBe(0);
    expect(sync.stdout).toContain('"status": "succeeded"');
    expect((await script('switch-media-backend.sh', ['--to', 'minio'], env)).code).toBe(0);
    expect((await script('switch-media-backend.sh', ['--to', 'nowhere'], env)).code).toBe(2);
  });
});

describe('operator safety of every runbook script', () => {
  const all = readdirSync(SCRIPTS).filter((f) => f.endsWith('.sh') && !f.endsWith('lib.sh'));
  // Nothing listens here: a script that acted instead of refusing would exit 3 (unreachable).
  const env = { SAV3_API_URL: 'http://127.0.0.1:1', SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };

  it.each(all)('%s answers --help without acting (exit 0, usage on stdout)', async (name) => {
    const help = await script(name, ['--help'], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain(`scripts/dr/${name}`);
    expect(help.stderr).toBe('');
  });

  it.each(all)('%s rejects an unknown option with exit 2, before acting', async (name) => {
    const bad = await script(name, ['--no-such-option'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown argument: --no-such-option');
  });

  it('a server that accepts TCP and never answers: every API call is bounded (SAV3_HTTP_TIMEOUT), each script exits non-zero within it', async () => {
    const hung = await startTcpProxy(1);
    hung.setMode('hang');
    try {
      const env = { SAV3_API_URL: `http://127.0.0.1:${hung.port}`, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN, SAV3_HTTP_TIMEOUT: '2' };
      const runs = await Promise.all(
        ['backup-database.sh', 'verify-backups.sh', 'validate-daily-backups.sh', 'verify-database-restore.sh', 'dr-state.sh'].map(
          async (name) => {
            const started = Date.now();
            const run = await script(name, [], env);
            return { name, code: run.code, stderr: run.stderr, ms: Date.now() - started };
          },
        ),
      );
      for (const run of runs) {
        expect({ name: run.name, failed: run.code !== 0 && run.code !== null }).toEqual({ name: run.name, failed: true });
        expect(run.ms).toBeLessThan(8000);
        expect(run.stderr).toContain('within 2s');
      }
      expect((await script('dr-state.sh', [], { ...env, SAV3_HTTP_TIMEOUT: 'soon' })).code).toBe(2);
    } finally {
      await hung.close();
    }
  }, 30_000);

  // Found by an outside attack: an API answering 200 {"status":"succeeded"} to everything made both
  // job scripts exit 0 with no backup and no validation; {} or HTML made them poll for an hour.
  it('backup-database.sh and validate-daily-backups.sh follow only a job the API named, by its own record', async () => {
    for (const body of ['{"status":"succeeded"}', '{}', 'null', '<html>ok</html>']) {
      const fake = await startDoctoredApi('http://127.0.0.1:1', () => ({ status: 200, body, contentType: 'application/json' }));
      try {
        for (const name of ['backup-database.sh', 'validate-daily-backups.sh']) {
          const started = Date.now();
          const run = await script(name, [], { SAV3_API_URL: fake.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN, SAV3_HTTP_TIMEOUT: '5' });
          expect({ name, body, code: run.code }).toEqual({ name, body, code: 1 });
          expect(run.stderr).toContain('names no job');
          expect(Date.now() - started).toBeLessThan(10_000);
        }
      } finally {
        await fake.close();
      }
    }
    // A job id, then an answer that is not that job's record: given up at once, never "succeeded".
    const id = '0f0f0f0f-0000-4000-8000-000000000000';
    const fake = await startDoctoredApi('http://127.0.0.1:1', (method) =>
      method === 'POST'
        ? {
            status: 202,
            body: JSON.stringify({ job: { id, kind: 'backup', status: 'queued', href: `/admin/jobs/${id}` } }),
            contentType: 'application/json',
          }
        : { status: 200, body: '{"status":"succeeded"}', contentType: 'application/json' },
    );
    try {
      const run = await script('backup-database.sh', [], { SAV3_API_URL: fake.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain("did not answer with that job's record");
    } finally {
      await fake.close();
    }
  }, 60_000);

  // Found by an outside attack on the job scripts: a record of another kind was followed, --no-wait
  // took any 2xx, 36 dashes passed as a job id, and a 200 with an empty body (or no status) was
  // polled for the whole hour. A hostile API: the start answer, then each poll's answer in turn
  // (the last one repeated).
  describe('the job scripts follow only the job they started, and give up at once on a malformed answer', () => {
    const id = '0f0f0f0f-0000-4000-8000-000000000000';
    type Answer = { status: number; body: string };
    const json = (status: number, value: unknown): Answer => ({ status, body: JSON.stringify(value) });
    const started = (kind: string, over: object = {}) =>
      json(202, { job: { id, kind, status: 'queued', href: `/admin/jobs/${id}`, ...over } });
    const record = (kind: string, status: string) => json(200, { id, kind, status, input: {}, result: null, error: null });

    async function hostile(name: string, args: string[], start: Answer, polls: Answer[]) {
      let n = 0;
      const paths: string[] = [];
      const fake = await startDoctoredApi('http://127.0.0.1:1', (method, path) => {
        paths.push(`${method} ${path}`);
        const a = method === 'POST' ? start : (polls[Math.min(n++, polls.length - 1)] ?? json(404, {}));
        return { status: a.status, body: a.body, contentType: 'application/json' };
      });
      const began = Date.now();
      try {
        const run = await script(name, args, { SAV3_API_URL: fake.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN, SAV3_HTTP_TIMEOUT: '5' });
        return { ...run, ms: Date.now() - began, polls: paths.filter((p) => p.startsWith('GET')) };
      } finally {
        await fake.close();
      }
    }

    it('a poll answering a record of another kind (a validation following a backup record, and back) exits 1 at once', async () => {
      const validate = await hostile('validate-daily-backups.sh', [], started('backup.validate'), [record('backup', 'succeeded')]);
      expect(validate.code).toBe(1);
      expect(validate.stderr).toContain('answered a job of kind "backup", not the backup.validate job this script started');
      expect(validate.polls).toEqual([`GET /admin/jobs/${id}`]);
      const backup = await hostile('backup-database.sh', [], started('backup'), [record('media.sync', 'succeeded')]);
      expect(backup.code).toBe(1);
      expect(backup.stderr).toContain('not the backup job this script started');
      // The start answer itself naming another kind is not followed at all.
      const other = await hostile('validate-daily-backups.sh', [], started('backup'), [record('backup', 'succeeded')]);
      expect(other.code).toBe(1);
      expect(other.stderr).toContain(`names job ${id} of kind "backup", not the backup.validate job`);
      expect(other.polls).toEqual([]);
    });

    it('--no-wait still requires the answer to name the job started (UUID id, its kind, a job status)', async () => {
      const bad: [Answer, string][] = [
        [json(202, {}), 'names no job'],
        [json(200, { status: 'succeeded' }), 'names no job'],
        [{ status: 202, body: '' }, 'names no job'],
        [json(202, { job: { id: 'not-a-uuid', kind: 'backup', status: 'queued' } }), 'names no job'],
        [started('backup.validate'), 'of kind "backup.validate", not the backup job'],
        [started('backup', { kind: undefined }), 'of kind none, not the backup job'],
        [started('backup', { status: 'done' }), 'with status "done", not a job status'],
        [started('backup', { status: undefined }), 'with status none, not a job status'],
      ];
      for (const [answer, message] of bad) {
        const run = await hostile('backup-database.sh', ['--no-wait'], answer, [record('backup', 'succeeded')]);
        expect({ body: answer.body, code: run.code, stderr: run.stderr }).toEqual({
          body: answer.body,
          code: 1,
          stderr: expect.stringContaining(message),
        });
        expect(run.polls).toEqual([]);
      }
      const ok = await hostile('validate-daily-backups.sh', ['--no-wait'], started('backup.validate'), [record('backup', 'failed')]);
      expect({ code: ok.code, polls: ok.polls }).toEqual({ code: 0, polls: [] });
    });

    it('a job id of 36 dashes (or any non-UUID of the right length) is not a job id', async () => {
      for (const fakeId of ['-'.repeat(36), 'f'.repeat(36), `${id.slice(0, 8)}${id.slice(9)}-`]) {
        for (const name of ['backup-database.sh', 'validate-daily-backups.sh']) {
          const kind = name === 'backup-database.sh' ? 'backup' : 'backup.validate';
          const run = await hostile(name, [], started(kind, { id: fakeId }), [json(200, { id: fakeId, kind, status: 'succeeded' })]);
          expect({ fakeId, name, code: run.code }).toEqual({ fakeId, name, code: 1 });
          expect(run.stderr).toContain('names no job (job.id missing or not a UUID)');
          expect(run.polls).toEqual([]);
        }
      }
    });

    it('a poll answering 200 with an empty body, a body without a status or an unknown status, or a 4xx, ends the wait at once (exit 1)', async () => {
      const malformed: [Answer, string][] = [
        [{ status: 200, body: '' }, "answered an empty body, not the job's record"],
        [{ status: 200, body: '<html>maintenance</html>' }, 'not a JSON object'],
        [json(200, [record('backup', 'succeeded')]), 'not a JSON object'],
        [json(200, { id, kind: 'backup' }), 'without a job status (status none)'],
        [json(200, { id, kind: 'backup', status: 'done' }), 'without a job status (status "done")'],
        [json(404, { error: { code: 'not_found' } }), 'answered HTTP 404; giving up'],
        [json(401, { error: { code: 'unauthorized' } }), 'answered HTTP 401; giving up'],
      ];
      for (const [answer, message] of malformed) {
        const run = await hostile('backup-database.sh', [], started('backup'), [record('backup', 'running'), answer]);
        expect({ body: answer.body, code: run.code, stderr: run.stderr }).toEqual({
          body: answer.body,
          code: 1,
          stderr: expect.stringContaining(message),
        });
        expect(run.polls).toHaveLength(2);
        expect(run.ms).toBeLessThan(10_000);
      }
    }, 60_000);

    it('a restarting API (5xx) is polled again, at most 5 times in a row; the good path exits 0 with the job printed', async () => {
      const unavailable = json(503, { error: { code: 'dependency_unavailable' } });
      const healed = await hostile('backup-database.sh', [], started('backup'), [
        record('backup', 'running'),
        unavailable,
        unavailable,
        record('backup', 'succeeded'),
      ]);
      expect({ code: healed.code, stderr: healed.stderr, polls: healed.polls.length }).toEqual({ code: 0, stderr: '', polls: 4 });
      expect(JSON.parse(healed.stdout.slice(healed.stdout.lastIndexOf('{\n  "id"')))).toMatchObject({
        id,
        kind: 'backup',
        status: 'succeeded',
      });
      const down = await hostile('backup-database.sh', [], started('backup'), [unavailable]);
      expect(down.code).toBe(1);
      expect(down.stderr).toContain('did not answer 5 polls in a row');
      expect(down.polls).toHaveLength(5);
      const validated = await hostile('validate-daily-backups.sh', ['--backup', 'latest'], started('backup.validate'), [
        record('backup.validate', 'succeeded'),
      ]);
      expect({ code: validated.code, stderr: validated.stderr }).toEqual({ code: 0, stderr: '' });
      const failed = await hostile('validate-daily-backups.sh', [], started('backup.validate'), [record('backup.validate', 'failed')]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain(`job ${id} failed`);
    }, 60_000);

    it('sync-media-files.sh: an answer that is neither a result nor a media.sync job, a failed run, or a record of another kind exits 1', async () => {
      const args = ['--from', 'primary', '--to', 'backup'];
      const syncJob = json(202, { async: true, job: { id, kind: 'media.sync', status: 'running', total: 5, href: `/admin/jobs/${id}` } });
      const cases: [Answer, Answer[], number, string][] = [
        [json(200, {}), [], 1, 'neither a sync result nor a sync job'],
        [{ status: 200, body: '' }, [], 1, 'neither a sync result nor a sync job'],
        [
          json(200, { dryRun: false, async: false, status: 'failed', failed: [{ key: 'a', error: 'x' }] }),
          [],
          1,
          'the sync failed: 1 object(s)',
        ],
        [json(202, { async: true, job: { id: '-'.repeat(36), kind: 'media.sync', status: 'running' } }), [], 1, 'names no job'],
        [syncJob, [record('backup', 'succeeded')], 1, 'not the media.sync job'],
        [syncJob, [{ status: 200, body: '' }], 1, 'an empty body'],
        [json(200, { dryRun: false, async: false, status: 'succeeded', failed: [] }), [], 0, ''],
        [syncJob, [record('media.sync', 'running'), record('media.sync', 'succeeded')], 0, ''],
      ];
      for (const [start, polls, code, message] of cases) {
        const run = await hostile('sync-media-files.sh', args, start, polls);
        expect({ body: start.body, code: run.code }).toEqual({ body: start.body, code });
        expect(run.stderr).toContain(message);
      }
    }, 60_000);
  });

  describe('verify-backups.sh and verify-database-restore.sh judge the answers, not only their status', () => {
    const good = {
      backups: [{ label: '20261126-000000F', type: 'full', stoppedAt: new Date().toISOString(), error: false }],
      archiving: { available: true, failing: false, rpoExposureSeconds: 0, lastArchivedWal: '000000010000000000000009' },
      backupAge: {
        maxAgeSeconds: 93600,
        newestFullOrDiff: { label: '20261126-000000F', stoppedAt: new Date().toISOString() },
        ageSeconds: 60,
        tooOld: false,
      },
    };
    const passed = { status: 'pass', checks: [{ name: 'connect', status: 'pass', detail: 'primary answered' }] };
    /** A fake API answering GET /admin/backups and POST /admin/verify/database with these bodies. */
    const run = async (name: string, answers: { backups?: unknown; verify?: unknown; verifyStatus?: number; raw?: string }) => {
      const fake = await startDoctoredApi('http://127.0.0.1:1', (method, path) => {
        if (answers.raw !== undefined) return { status: 200, body: answers.raw };
        if (path === '/admin/backups')
          return { status: 200, body: JSON.stringify('backups' in answers ? answers.backups : good), contentType: 'application/json' };
        if (path === '/admin/verify/database')
          return {
            status: answers.verifyStatus ?? 200,
            body: JSON.stringify('verify' in answers ? answers.verify : passed),
            contentType: 'application/json',
          };
        return { status: 404, body: '{}' };
      });
      try {
        return await script(name, [], { SAV3_API_URL: fake.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN });
      } finally {
        await fake.close();
      }
    };

    it('verify-backups.sh exits 1 when the RPO exposure is unknown or beyond 5 minutes, archiving is unavailable, the newest full/diff backup is too old, or the answer is not the inventory', async () => {
      expect((await run('verify-backups.sh', {})).code).toBe(0);
      const cases: [unknown, string][] = [
        [{ ...good, archiving: { available: false, error: 'the active database did not answer' } }, 'WAL archiving status is unavailable'],
        [{ ...good, archiving: { ...good.archiving, rpoExposureSeconds: null } }, 'RPO exposure is unknown'],
        [{ ...good, archiving: { ...good.archiving, rpoExposureSeconds: 301 } }, 'RPO exposure 301 s is above 300 s'],
        [{ ...good, backupAge: { ...good.backupAge, ageSeconds: 30 * 86400, tooOld: true } }, 'beyond BACKUP_MAX_AGE (93600 s)'],
        [{ ...good, backupAge: undefined }, 'does not say how old'],
        [
          {
            ...good,
            backups: [
              {
                ...good.backups[0],
                recovery: {
                  timeline: 2,
                  segments: 3,
                  toEndOfArchive: false,
                  problem: 'the archived WAL has a hole after 000000020000000000000004',
                },
              },
            ],
          },
          'cannot be recovered to the end of the archive: the archived WAL has a hole after 000000020000000000000004',
        ],
        [null, 'not the backup inventory'],
        [{}, 'not the backup inventory'],
      ];
      for (const [backups, message] of cases) {
        const result = await run('verify-backups.sh', { backups });
        expect({ message, code: result.code, said: result.stderr.includes(message) }).toEqual({ message, code: 1, said: true });
      }
      const html = await run('verify-backups.sh', { raw: '<html>ok</html>' });
      expect(html.code).toBe(1);
    }, 60_000);

    it('verify-database-restore.sh exits 1 on a failed check, archiving failing or unavailable, {} or HTML; 0 when both pass', async () => {
      const ok = await run('verify-database-restore.sh', {});
      expect({ code: ok.code, stderr: ok.stderr }).toEqual({ code: 0, stderr: expect.stringContaining('verification: pass') });
      const failedCheck = await run('verify-database-restore.sh', {
        verifyStatus: 503,
        verify: {
          status: 'fail',
          checks: [{ name: 'replication_status', status: 'fail', detail: 'replica is on timeline 1, primary on 2' }],
        },
      });
      expect(failedCheck.code).toBe(1);
      expect(failedCheck.stderr).toContain('FAIL: replication_status: replica is on timeline 1, primary on 2');
      expect(failedCheck.stderr).toContain('rebuild-primary.sh');
      const archiving = await run('verify-database-restore.sh', {
        backups: {
          ...good,
          archiving: {
            ...good.archiving,
            failing: true,
            failure: { code: 'archive_missing_in_repository', message: 'PostgreSQL reports …0D archived; the repository ends at …0A' },
          },
        },
      });
      expect(archiving.code).toBe(1);
      expect(archiving.stderr).toContain(
        'WAL archiving is failing: PostgreSQL reports …0D archived; the repository ends at …0A (archive_missing_in_repository)',
      );
      expect((await run('verify-database-restore.sh', { backups: { ...good, archiving: { available: false } } })).code).toBe(1);
      const empty = await run('verify-database-restore.sh', { verify: {} });
      expect(empty.code).toBe(1);
      expect(empty.stderr).toContain('not a verification report');
      expect((await run('verify-database-restore.sh', { raw: '<html>ok</html>' })).code).toBe(1);
    }, 60_000);
  });

  it('an empty argument does not hide the ones after it: verify-backups.sh and verify-database-restore.sh refuse "" --bogus (exit 2)', async () => {
    for (const name of ['verify-backups.sh', 'verify-database-restore.sh']) {
      const bad = await script(name, ['', '--bogus'], env);
      expect({ name, code: bad.code }).toEqual({ name, code: 2 });
      expect(bad.stderr).toContain('unknown argument');
    }
  });

  it('reset-dr-state.sh --accept-older-timeline sends acceptOlderTimeline; without it the body has none', async () => {
    const bodies: unknown[] = [];
    const server = http.createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        bodies.push(JSON.parse(text));
        res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"state":{}}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const e = { SAV3_API_URL: url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
      expect((await script('reset-dr-state.sh', ['--reason', 'lost', '--accept-older-timeline', '--yes'], e)).code).toBe(0);
      expect((await script('reset-dr-state.sh', ['--reason', 'lost', '--yes'], e)).code).toBe(0);
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(bodies).toEqual([
      { confirm: 'reset-dr-state', reason: 'lost', database: 'primary', acceptOlderTimeline: true },
      { confirm: 'reset-dr-state', reason: 'lost', database: 'primary' },
    ]);
  });

  it('an option missing its value, or a malformed number, exits 2', async () => {
    expect((await script('switch-database-connection.sh', ['--to'], env)).code).toBe(2);
    expect((await script('switch-database-connection.sh', ['--to', '--dry-run'], env)).code).toBe(2);
    expect((await script('promote-replica.sh', ['--max-lag', 'soon'], env)).code).toBe(2);
    expect((await script('enable-readonly-mode.sh', ['--reason', 'x', '--ttl', '1h'], env)).code).toBe(2);
    expect((await script('reset-dr-state.sh', ['--reason', 'stale'], env)).code).toBe(2);
  });

  it('a dry run whose checks fail exits 1 (the server answered 200), one whose checks pass exits 0', async () => {
    const s3 = await startS3Server({ bucket: 'runbook-dry-run' });
    const api = await startInstance(mediaEnv('PRIMARY', s3));
    try {
      const live = { SAV3_API_URL: api.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
      // No replica is configured: every check that needs one fails.
      const promote = await script('promote-replica.sh', ['--dry-run'], live);
      expect(promote.code).toBe(1);
      expect(JSON.parse(promote.stdout)).toMatchObject({ dryRun: true, wouldPromote: false });
      expect(promote.stderr).toContain('replica_configured');
      const sw = await script('switch-database-connection.sh', ['--to', 'replica', '--dry-run'], live);
      expect(sw.code).toBe(1);
      expect(sw.stderr).toContain('target_configured');
      const ok = await script('switch-database-connection.sh', ['--to', 'primary', '--dry-run'], live);
      expect(ok.code).toBe(0);
      const media = await script('switch-media-backend.sh', ['--to', 'backup', '--dry-run'], live);
      expect(media.code).toBe(1);
    } finally {
      await api.stop();
      await s3.destroy();
    }
  });

  it("a 200 that is not the API's JSON (a proxy page, an empty body, an array) is never success, dry run or not", async () => {
    for (const raw of ['<html>ok</html>', '', '[]', 'null']) {
      const fake = await startDoctoredApi('http://127.0.0.1:1', () => ({ status: 200, body: raw }));
      try {
        const env = { SAV3_API_URL: fake.url, SAV3_ADMIN_TOKEN: OPERATOR_TOKEN };
        for (const [name, args] of [
          ['promote-replica.sh', ['--dry-run']],
          ['switch-database-connection.sh', ['--to', 'replica']],
          ['switch-media-backend.sh', ['--to', 'backup', '--dry-run']],
        ] as const) {
          const run = await script(name, [...args], env);
          expect({ raw, name, code: run.code }).toEqual({ raw, name, code: 1 });
        }
      } finally {
        await fake.close();
      }
    }
  }, 60_000);
});
