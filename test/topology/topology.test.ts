// `npm run test:topology`: the shipped docker-compose topology started natively (topology.ts),
// checked with the real programs: health checks, uploads through the load balancer and PgBouncer,
// the probe's statement timeout, what the edge exposes, alerts firing on real outages and reaching
// Alertmanager, WAL archiving after a failover, and a side-car that fails loudly.
import { chownSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { withProbeConnection } from '../../src/adapters/pg-connection.ts';
import type { DatabaseClients } from '../../src/adapters/database-clients.ts';
import { DatabaseWriteFence } from '../../src/services/database/write-fence.ts';
import { classifyError } from '../../src/health/probe-error.ts';
import { POSTGRES_GID, POSTGRES_UID, readYaml, ROOT } from './compose-map.ts';
import { PG_BIN, run } from './processes.ts';
import { sha256Hex } from '../../support/common.ts';
import { EVAL_SECONDS, NOT_STARTED, PATH, SCRAPE_SECONDS, Topology } from './topology.ts';
import { eventually, freePort } from '../../support/common.ts';

jest.setTimeout(240_000);

const OPERATOR_TOKEN = readFileSync(join(ROOT, 'deploy/secrets/admin_tokens.txt'), 'utf8')
  .trim()
  .split(',')[0]!
  .split(':')
  .slice(2)
  .join(':');

const forSeconds = (name: string): number => {
  const rules = readYaml<{ groups: { rules: { alert: string; for: string }[] }[] }>('monitoring/alerts.yml').groups.flatMap((g) => g.rules);
  const m = /^(\d+)(s|m)$/.exec(rules.find((r) => r.alert === name)!.for)!;
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
};

describe('the shipped docker-compose topology, started natively', () => {
  const topology = new Topology();
  const { map, procs, data, dir, s3, webhook } = topology;
  const lb = () => topology.lb;

  beforeAll(() => topology.start(), 180_000);
  afterAll(() => topology.stop());

  it('starts in the compose order: the primary health check fails against the first-start server, migrate waits and applies', () => {
    expect(topology.firstStart.healthcheckDuringTemporaryServer).not.toBe(0);
    const migrations = readdirSync(join(ROOT, 'prisma/migrations'), { withFileTypes: true }).filter((d) => d.isDirectory()).length;
    expect(procs.log('migrate')).toMatch(
      new RegExp(`not reachable yet \\(connection_refused\\)[\\s\\S]*\\b${migrations} migration\\(s\\) applied`),
    );
  });

  it('passes every health check in the compose file', async () => {
    const checks: Record<string, number> = {};
    for (const service of ['postgres', 'postgres-replica', 'pgbouncer', 'redis', 'minio', 'minio-backup', 'api-1', 'api-2', 'pgbackrest']) {
      const env = service === 'pgbackrest' ? topology.pgbackrestEnv() : {};
      checks[service] = (
        await eventually(
          () => topology.healthcheck(service, env),
          (r) => r.code === 0,
          60_000,
          1000,
        )
      ).code;
    }
    expect(checks).toEqual({
      postgres: 0,
      'postgres-replica': 0,
      pgbouncer: 0,
      redis: 0,
      minio: 0,
      'minio-backup': 0,
      'api-1': 0,
      'api-2': 0,
      pgbackrest: 0,
    });
    // Every service with a health check in the compose file is covered, but the backup worker,
    // which this topology does not start yet (it has tests of its own).
    const withChecks = Object.entries(map.compose.services)
      .filter(([n, s]) => s.healthcheck && !NOT_STARTED.includes(n))
      .map(([n]) => n)
      .sort();
    expect(withChecks).toEqual(Object.keys(checks).sort());
  });

  it('serves uploads through the load balancer, metadata through PgBouncer in transaction mode', async () => {
    expect(readFileSync(join(dir, 'pgbouncer', 'pgbouncer.ini'), 'utf8')).toMatch(/^pool_mode = transaction$/m);
    const body = Buffer.from(`topology ${Date.now()}`);
    const put = await fetch(`${lb()}/media/topology/one.txt`, { method: 'PUT', body, headers: { 'Content-Type': 'text/plain' } });
    expect(put.status).toBe(201);
    const sha = sha256Hex(body);
    expect(((await put.json()) as { sha256: string }).sha256).toBe(sha);
    // Read back several times: round robin serves it from both instances.
    for (let i = 0; i < 4; i += 1) {
      const get = await fetch(`${lb()}/media/topology/one.txt`);
      expect(get.status).toBe(200);
      expect(Buffer.from(await get.arrayBuffer())).toEqual(body);
    }
    // Right after start the standby may still be connecting (health truthfully says degraded):
    // wait, bounded, for the pair to stream, and show the replication facts if it never does.
    type DbHealth = { status: string; target: string; replication?: unknown };
    const db = await eventually(
      async () => (await (await fetch(`${lb()}/health/database`)).json()) as DbHealth,
      (b) => b.status === 'healthy',
      30_000,
      500,
    );
    expect({ status: db.status, target: db.target, replication: db.status === 'healthy' ? 'ok' : db.replication }).toEqual({
      status: 'healthy',
      target: 'primary',
      replication: 'ok',
    });

    // Load from both instances: every request succeeds and PostgreSQL sees no more server
    // connections than PgBouncer's MAX_DB_CONNECTIONS (the pool is shared and bounded).
    const bouncer = map.environment('pgbouncer');
    const watcher = new pg.Client({ connectionString: readFileSync(map.path('/run/secrets/database_migrate_url'), 'utf8').trim() });
    await watcher.connect();
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows } = await watcher.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
          [bouncer.DB_USER],
        );
        peak = Math.max(peak, rows[0]!.n);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const statuses = await Promise.all(
      Array.from({ length: 150 }, (_, i) =>
        i % 3 === 0
          ? fetch(`${lb()}/media/topology/load-${i}.txt`, {
              method: 'PUT',
              body: `load ${i}`,
              headers: { 'Content-Type': 'text/plain' },
            }).then(
              (r) => r.status,
              () => 0,
            )
          : fetch(`${lb()}/media?limit=5`).then(
              (r) => r.status,
              () => 0,
            ),
      ),
    );
    sampling = false;
    await sampler;
    await watcher.end();
    expect(statuses.filter((st, i) => st !== (i % 3 === 0 ? 201 : 200))).toEqual([]);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(Number(bouncer.MAX_DB_CONNECTIONS) + 2);
    console.log(
      `150 concurrent requests through the load balancer: all succeeded; peak PostgreSQL connections of ${bouncer.DB_USER}: ${peak} (MAX_DB_CONNECTIONS ${bouncer.MAX_DB_CONNECTIONS})`,
    );
  });

  it('probes through PgBouncer with the statement timeout set after connecting, and it does not leak', async () => {
    const url = readFileSync(map.path('/run/secrets/database_url'), 'utf8').trim();
    const signal = new AbortController().signal;
    const inside = await withProbeConnection(
      { connectionString: url, timeoutMs: 1234, signal },
      async (c) => (await c.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows[0]!.statement_timeout,
    );
    expect(inside).toBe('1234ms');
    // The database write fence bounds its statements the same way (a session SET leaked 5 s to
    // other clients' transactions once: this topology test caught it).
    const fence = new DatabaseWriteFence(
      { has: (t: string) => t === 'primary', url: () => url } as unknown as DatabaseClients,
      4321,
      'topology-leak-check',
    );
    for (let i = 0; i < 5; i += 1) expect((await fence.raise(i + 1, 'topology test')).nodes.primary).toEqual({ outcome: 'raised' });
    const after = new pg.Client({ connectionString: url });
    await after.connect();
    const outside: string[] = [];
    for (let i = 0; i < 5; i += 1)
      outside.push((await after.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows[0]!.statement_timeout);
    await after.end();
    expect(new Set(outside)).toEqual(new Set(['0']));
    // What the old probe sent: PgBouncer refuses it, and the code says so (not "timeout").
    const old = new pg.Client({ connectionString: url, statement_timeout: 1000 });
    old.on('error', () => undefined);
    const err = await old.connect().then(
      () => undefined,
      (e: unknown) => e,
    );
    await old.end().catch(() => undefined);
    expect(String(err)).toMatch(/unsupported startup parameter/);
    expect(classifyError(err).code).toBe('connection_refused');
  });

  it('exposes no metrics and no admin API to the outside', async () => {
    expect((await fetch(`${lb()}/metrics`)).status).toBe(404);
    const metricsPort = map.port('api-1', Number(map.environment('api-1').METRICS_PORT));
    expect(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).toMatch(/^sav3_dr_state_version/m);
    // Loopback clients (the default allow-list) reach the admin API; tokens still decide.
    expect((await fetch(`${lb()}/admin/dr/state`)).status).toBe(401);
    expect((await fetch(`${lb()}/admin/dr/state`, { headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` } })).status).toBe(200);
    if (!topology.lbExternal) throw new Error('this machine has no non-loopback IPv4 address to test the allow-list from');
    for (const headers of [
      {} as Record<string, string>,
      { 'X-Forwarded-For': '127.0.0.1' },
      { Authorization: `Bearer ${OPERATOR_TOKEN}`, 'X-Forwarded-For': '127.0.0.1' },
    ]) {
      const res = await fetch(`${topology.lbExternal}/admin/dr/state`, { headers });
      expect({ headers, status: res.status }).toEqual({ headers, status: 403 });
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('address_not_allowed');
    }
    expect((await fetch(`${topology.lbExternal}/health/live`)).status).toBe(200);
  });

  it('fires APIServiceDown, MediaStorageDown, DatabaseDown, RedisDown and HealthProbeFailing on real outages within `for` + two scrapes, and Alertmanager receives them', async () => {
    // Every target is scraped and nothing fires before the outages.
    const up = await eventually(
      () =>
        fetch(`${topology.prometheus}/api/v1/query?query=${encodeURIComponent('up')}`).then(
          (r) => r.json() as Promise<{ data: { result: { metric: { job: string }; value: [number, string] }[] } }>,
          () => undefined,
        ),
      (r) => r?.data.result.length === topology.scrapeTargets && r.data.result.every((s) => s.value[1] === '1'),
      30_000,
      1000,
    );
    expect(up?.data.result.length).toBe(topology.scrapeTargets);
    expect(up?.data.result.filter((s) => s.value[1] !== '1')).toEqual([]);
    const pgUp = await fetch(`${topology.prometheus}/api/v1/query?query=pg_up`).then(
      (r) => r.json() as Promise<{ data: { result: { metric: Record<string, string>; value: [number, string] }[] } }>,
    );
    // The exporter sees PostgreSQL: every pg_up series it exports reads 1 (one run on a loaded
    // machine showed the series twice; the labels are printed if that happens again).
    const pgUpSeries: Record<string, string>[] = pgUp.data.result.map((s) => ({ ...s.metric, value: s.value[1] }));
    if (pgUpSeries.length !== 1) console.log('pg_up series:', JSON.stringify(pgUpSeries));
    expect(pgUpSeries.length).toBeGreaterThan(0);
    expect(pgUpSeries.filter((s) => s.job !== 'postgres' || s.value !== '1')).toEqual([]);
    expect((await topology.alerts()).filter((a) => a.state === 'firing')).toEqual([]);

    const outages = ['APIServiceDown', 'MediaStorageDown', 'DatabaseDown', 'RedisDown', 'HealthProbeFailing'];
    const firing = async (name: string, labels: Record<string, string> = {}) =>
      (await topology.alerts()).some(
        (a) => a.labels.alertname === name && a.state === 'firing' && Object.entries(labels).every(([k, v]) => a.labels[k] === v),
      );
    const started: Record<string, number> = {};
    const fired: Record<string, number> = {};
    // The API's own probe runs every HEALTH_INTERVAL_MS (default 5 s) before its gauge changes.
    const probeLag = (name: string) => (name === 'HealthProbeFailing' ? 5 + 1 : 0);
    // for + two scrapes + one evaluation, + 1 s for this test's own polling of the alerts API.
    const bound = (name: string) => forSeconds(name) + 2 * SCRAPE_SECONDS + EVAL_SECONDS + 1 + probeLag(name);
    const labels: Record<string, Record<string, string>> = { HealthProbeFailing: { dependency: 'media', target: 'primary' } };
    const watch = (async () => {
      // Until all fired, or every one is well past its bound (the check below then fails).
      while (!outages.every((n) => fired[n] || (started[n] && Date.now() - started[n]! > (bound(n) + 10) * 1000))) {
        for (const name of Object.keys(started)) if (!fired[name] && (await firing(name, labels[name]))) fired[name] = Date.now();
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    // An API instance dies; steady traffic keeps succeeding through the other.
    // Steady, not flooding: one request every ~10 ms.
    const results: (number | string)[] = [];
    let traffic = true;
    const load = (async () => {
      while (traffic) {
        results.push(
          await fetch(`${lb()}/media?limit=1`).then(
            (r) => r.status,
            (e: Error & { cause?: { code?: string; message?: string } }) => `${e.message}: ${e.cause?.code ?? e.cause?.message}`,
          ),
        );
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    started.APIServiceDown = Date.now();
    await procs.stop('api-2', 'SIGKILL');
    // The primary object store stops.
    started.MediaStorageDown = Date.now();
    started.HealthProbeFailing = started.MediaStorageDown;
    await s3.minio!.stop();
    await new Promise((r) => setTimeout(r, 8000));
    traffic = false;
    await load;
    expect(results.length).toBeGreaterThan(20);
    expect(results.filter((s) => s !== 200)).toEqual([]);
    console.log(`one API instance killed: ${results.length} requests through the load balancer in the next 8 s, all 200`);

    // PostgreSQL dies (the postmaster is killed); the exporter keeps answering with pg_up 0.
    started.DatabaseDown = Date.now();
    process.kill(topology.postmasterPid(data.primary), 'SIGKILL');
    // Redis dies too; its exporter keeps answering with redis_up 0.
    started.RedisDown = Date.now();
    await procs.stop('redis', 'SIGKILL');
    // Both exporters are scraped on their own schedule: wait for each to report its dependency down.
    for (const metric of ['pg_up', 'redis_up'])
      await eventually(
        async () => (await topology.query(metric)).map((s) => s.value[1]),
        (v) => v[0] === '0',
        10_000,
        500,
      );
    expect((await topology.query('pg_up')).map((s) => s.value[1])).toEqual(['0']);
    expect((await topology.query('redis_up')).map((s) => s.value[1])).toEqual(['0']);
    // The surviving instance tells the truth about the database behind PgBouncer. With Redis dead
    // too, the DR state's lease may run out before the next database probe: 503 `state_stale`
    // first (writes are refused: true), then the probe's own code.
    const apiPort = map.port('api-1', Number(map.environment('api-1').PORT));
    const seen = new Set<string>();
    const dbHealth = await eventually(
      () =>
        fetch(`http://127.0.0.1:${apiPort}/health/database`).then(async (r) => {
          const answer = { status: r.status, body: (await r.json()) as { error?: { code: string } } };
          seen.add(`${answer.status} ${answer.body.error?.code ?? '-'}`);
          return answer;
        }),
      (r) => r.status === 503 && ['connection_refused', 'timeout'].includes(r.body.error?.code ?? ''),
      20_000,
      500,
    );
    expect([...seen].every((a) => /^(200|503) /.test(a))).toBe(true);
    expect(dbHealth.status).toBe(503);
    expect(['connection_refused', 'timeout']).toContain(dbHealth.body.error?.code);
    console.log(
      `PostgreSQL killed behind PgBouncer: /health/database 503 with error.code ${dbHealth.body.error?.code} (answers seen: ${[...seen].join(', ')})`,
    );
    await watch;
    const timings: Record<string, string> = {};
    for (const name of outages)
      timings[name] = `${((fired[name]! - started[name]!) / 1000).toFixed(1)} s (for ${forSeconds(name)} s, bound ${bound(name)} s)`;
    console.log(`alert firing times after the outage: ${JSON.stringify(timings, null, 1)}`);
    for (const name of outages) {
      const took = fired[name] === undefined ? Infinity : (fired[name]! - started[name]!) / 1000;
      expect({ name, within: took <= bound(name), took }).toEqual({ name, within: true, took });
    }
    // The exporters themselves stayed up: only pg_up / redis_up could have fired these.
    expect((await topology.query('up{job=~"postgres|redis"}')).map((s) => s.value[1])).toEqual(['1', '1']);

    // Alertmanager holds all five; the critical ones reach the webhook (group_wait 10s).
    const received = await eventually(
      () =>
        fetch(`${topology.alertmanager}/api/v2/alerts`).then(
          (r) => r.json() as Promise<{ labels: Record<string, string> }[]>,
          () => [],
        ),
      (list) => outages.every((n) => list.some((a) => a.labels.alertname === n)),
      15_000,
      500,
    );
    expect(received.map((a) => a.labels.alertname)).toEqual(expect.arrayContaining(outages));
    await eventually(
      async () => webhook,
      (w) => ['APIServiceDown', 'DatabaseDown'].every((n) => w.some((a) => a.alertname === n && a.status === 'firing')),
      20_000,
      500,
    );
    expect(webhook.filter((a) => a.status === 'firing').map((a) => a.alertname)).toEqual(
      expect.arrayContaining(['APIServiceDown', 'DatabaseDown']),
    );
  });

  it('after a failover the promoted replica archives WAL to the same repository', async () => {
    const replicaData = topology.replicaDataDir();
    const replicaEnv = topology.replicaPgbackrestEnv();
    expect((await run(join(PG_BIN, 'pg_ctl'), ['-D', replicaData, '-w', 'promote'], { asPostgres: true })).code).toBe(0);
    const check = await run('pgbackrest', ['--stanza=main', 'check'], { asPostgres: true, env: replicaEnv, timeoutMs: 90_000 });
    expect(check).toMatchObject({ code: 0 });
    const psql = await run(
      join(PG_BIN, 'psql'),
      [
        '-h',
        data.sockReplica,
        '-p',
        String(map.port('postgres-replica', 5432)),
        '-U',
        'sav3',
        '-d',
        'sav3',
        '-Atc',
        'SELECT pg_is_in_recovery(), archived_count > 0, failed_count FROM pg_stat_archiver',
      ],
      { asPostgres: true },
    );
    expect(psql.out.trim()).toBe('f|t|0');
  });

  it('the pgBackRest side-car fails loudly when the stanza cannot be created', async () => {
    const broken = join(dir, 'pgbackrest-broken.conf');
    writeFileSync(
      broken,
      readFileSync(topology.pgbackrestConf, 'utf8')
        .replace(/pg1-port=\d+/, `pg1-port=${await freePort()}`)
        .replace(/repo1-path=.*/, `repo1-path=${dir}/repo-broken`),
    );
    chownSync(broken, POSTGRES_UID, POSTGRES_GID);
    const started = Date.now();
    const result = await run('sh', [join(ROOT, 'deploy/pgbackrest/sidecar.sh')], {
      asPostgres: true,
      env: { PGBACKREST_CONFIG: broken, PATH, STANZA_CREATE_ATTEMPTS: '2' },
      timeoutMs: 30_000,
    });
    expect(result.code).not.toBe(0);
    expect(result.out).toMatch(/stanza-create failed 2 times/);
    expect(Date.now() - started).toBeLessThan(30_000);
  });
});
