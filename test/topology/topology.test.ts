// `npm run test:topology`: the docker-compose.yml topology started natively from the compose file
// and deploy/, with the real programs Debian has (PostgreSQL 15, pgBackRest, PgBouncer, Redis,
// HAProxy standing in for Traefik with its health check, Prometheus, Alertmanager, the postgres and
// redis exporters) and s3rver standing in for the two MinIO servers. Container host names, ports
// and paths are mapped onto 127.0.0.1, free ports and a temp dir (compose-map.ts); 127.0.0.1 plays
// the other containers, so pg_hba has no loopback trust here and every TCP login is SCRAM.
import { createHash } from 'node:crypto';
import { appendFileSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as Minio from 'minio';
import pg from 'pg';
import { stringify } from 'yaml';
import { withProbeConnection } from '../../src/database/pg-probe.ts';
import { classifyError } from '../../src/health/probe-error.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { deadPort } from '../support/hung-server.ts';
import { ComposeMap, POSTGRES_GID, POSTGRES_UID, readYaml, ROOT } from './compose-map.ts';
import { renderPgbouncer } from './pgbouncer-ini.ts';
import { PG_BIN, Processes, run, waitFor } from './processes.ts';

jest.setTimeout(240_000);

const SCRAPE_SECONDS = 2;
const EVAL_SECONDS = 1;
const TOKEN_FILE_LINE = readFileSync(join(ROOT, 'deploy/secrets/admin_tokens.txt'), 'utf8').trim().split(',')[0]!;
const OPERATOR_TOKEN = TOKEN_FILE_LINE.split(':').slice(2).join(':');
const PATH = `${PG_BIN}:${process.env.PATH}`;

interface Alert {
  labels: Record<string, string>;
  state: string;
  activeAt?: string;
}

describe('the shipped docker-compose topology, started natively', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sav3-topology-'));
  const map = new ComposeMap(dir);
  const procs = new Processes(dir);
  const s3: Record<string, S3ServerHandle> = {};
  const webhook: { alertname: string; status: string; at: number }[] = [];
  let webhookServer: http.Server;
  let lb: string;
  let lbExternal: string | undefined;
  let prometheus: string;
  let alertmanager: string;
  let pgbackrestConf: string;
  let scrapeTargets = 0;
  const data = { primary: join(dir, 'primary-volume'), replicaVolume: join(dir, 'replica-volume'), repo: join(dir, 'pgbackrest-repo'), sockPrimary: join(dir, 'sock-primary'), sockReplica: join(dir, 'sock-replica') };
  const pgbackrestEnv = () => ({ PGBACKREST_CONFIG: pgbackrestConf, PATH });

  const postmasterPid = (dataDir: string) => Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const healthcheck = async (service: string, env: Record<string, string> = {}) => {
    const [cmd, ...args] = map.healthcheck(service);
    return run(cmd!, args, { env: { PATH, ...env }, asPostgres: cmd === 'pgbackrest', timeoutMs: 90_000 });
  };
  const postgresArgs = (service: string) => {
    const command = map.service(service).command ?? [];
    return command[0] === 'postgres' ? command.slice(1) : command;
  };
  const alerts = async (): Promise<Alert[]> => {
    const res = await fetch(`${prometheus}/api/v1/alerts`).catch(() => undefined);
    if (!res?.ok) return [];
    return ((await res.json()) as { data: { alerts: Alert[] } }).data.alerts;
  };
  const firing = async (name: string, labels: Record<string, string> = {}) =>
    (await alerts()).some((a) => a.labels.alertname === name && a.state === 'firing' && Object.entries(labels).every(([k, v]) => a.labels[k] === v));
  const query = async (q: string) =>
    (await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(q)}`).then((r) => r.json() as Promise<{ data: { result: { metric: Record<string, string>; value: [number, string] }[] } }>)).data.result;
  const forSeconds = (name: string): number => {
    const rules = readYaml<{ groups: { rules: { alert: string; for: string }[] }[] }>('monitoring/alerts.yml').groups.flatMap((g) => g.rules);
    const rule = rules.find((r) => r.alert === name)!;
    const m = /^(\d+)(s|m)$/.exec(rule.for)!;
    return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
  };

  beforeAll(async () => {
    for (const d of Object.values(data)) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chownSync(d, POSTGRES_UID, POSTGRES_GID);
    }
    chownSync(dir, POSTGRES_UID, POSTGRES_GID);
    const ports = async (service: string, ...containerPorts: number[]) => {
      for (const p of containerPorts) map.listen(service, p, await deadPort());
    };
    const bouncerEnv = map.environment('pgbouncer');
    await ports('postgres', 5432);
    await ports('postgres-replica', 5432);
    await ports('pgbouncer', Number(bouncerEnv.LISTEN_PORT ?? 5432));
    await ports('redis', 6379);
    for (const api of ['api-1', 'api-2']) await ports(api, Number(map.environment(api).PORT), Number(map.environment(api).METRICS_PORT));
    await ports('postgres-exporter', 9187);
    await ports('redis-exporter', 9121);
    await ports('alertmanager', 9093);
    await ports('prometheus', 9090);
    map.mapPath('/var/lib/postgresql/data', data.primary);
    map.mapPath('/var/lib/pgbackrest', data.repo);
    map.mapPath('/var/run/postgresql', data.sockPrimary);
    map.secrets();

    // S3 stand-ins, with MinIO's health and metrics paths answered (bucket "minio").
    const minioEnv = map.environment('api-1');
    const secret = readFileSync(map.path(minioEnv.MEDIA_PRIMARY_SECRET_KEY_FILE!), 'utf8').trim();
    for (const [service, bucket] of [['minio', minioEnv.MEDIA_PRIMARY_BUCKET!], ['minio-backup', minioEnv.MEDIA_BACKUP_BUCKET!]] as const) {
      s3[service] = await startS3Server({ bucket, accessKey: minioEnv.MEDIA_PRIMARY_ACCESS_KEY!, secretKey: secret });
      map.listen(service, 9000, s3[service]!.port);
      const client = new Minio.Client({ endPoint: '127.0.0.1', port: s3[service]!.port, useSSL: false, accessKey: minioEnv.MEDIA_PRIMARY_ACCESS_KEY!, secretKey: secret });
      await client.makeBucket('minio');
      await client.putObject('minio', 'health/live', Buffer.from(''));
      const metrics = Buffer.from('# TYPE minio_cluster_health_status gauge\nminio_cluster_health_status 1\n');
      await client.putObject('minio', 'v2/metrics/cluster', metrics, metrics.length, { 'Content-Type': 'text/plain; version=0.0.4' });
    }

    // pgBackRest: the shipped configuration with its container paths mapped.
    pgbackrestConf = join(dir, 'pgbackrest.conf');
    const conf = readFileSync(join(ROOT, 'deploy/pgbackrest/pgbackrest.conf'), 'utf8')
      .split('\n')
      .map((line) => line.replace(/^((?:repo1|pg1)-(?:path|socket-path))=(.*)$/, (_m, k: string, v: string) => `${k}=${map.path(v)}`))
      .join('\n')
      .replace('[global]', `[global]\nlog-path=${dir}/pgbackrest-log\nlock-path=${dir}/pgbackrest-lock\nspool-path=${dir}/pgbackrest-spool`)
      .replace('[main]', `[main]\npg1-port=${map.port('postgres', 5432)}`);
    writeFileSync(pgbackrestConf, conf);
    chownSync(pgbackrestConf, POSTGRES_UID, POSTGRES_GID);

    // Primary: the image's first start (initdb, temporary socket-only server, init scripts), then
    // the real server with the compose command.
    const primaryEnv = map.environment('postgres');
    const local = ['-c', `port=${map.port('postgres', 5432)}`, '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${data.sockPrimary}`, '-c', 'fsync=off', '-c', 'shared_buffers=32MB'];
    const pwfile = map.path(primaryEnv.POSTGRES_PASSWORD_FILE!);
    const init = await run(join(PG_BIN, 'initdb'), ['-D', data.primary, `--username=${primaryEnv.POSTGRES_USER}`, `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], { asPostgres: true });
    expect(init).toMatchObject({ code: 0 });
    writeFileSync(join(data.primary, 'pg_hba.conf'), 'local all all trust\nlocal replication all trust\nhost all all all scram-sha-256\n');
    const temp = await run(join(PG_BIN, 'pg_ctl'), ['-D', data.primary, '-w', '-o', [...postgresArgs('postgres').map((a) => `'${a}'`), ...local.map((a) => `'${a}'`), "-c listen_addresses=''"].join(' '), '-l', join(dir, 'logs', 'postgres-first-start.log'), 'start'], { asPostgres: true, env: pgbackrestEnv() });
    expect(temp).toMatchObject({ code: 0 });
    // The compose health check must not pass against the temporary server; the migrate step,
    // started now, must wait for the real one.
    expect((await healthcheck('postgres')).code).not.toBe(0);
    const migrateEnv = map.processEnv('migrate');
    procs.start('migrate', process.execPath, ['--import', 'tsx', 'src/migrate.ts'], { env: migrateEnv, cwd: ROOT });
    const sock = { PGHOST: data.sockPrimary, PGPORT: String(map.port('postgres', 5432)) };
    expect((await run(join(PG_BIN, 'psql'), ['-U', primaryEnv.POSTGRES_USER!, '-d', 'postgres', '-c', `CREATE DATABASE ${primaryEnv.POSTGRES_DB}`], { asPostgres: true, env: sock })).code).toBe(0);
    const initScript = await run('bash', [join(ROOT, 'deploy/postgres/primary-init.sh')], {
      asPostgres: true,
      env: { ...sock, PATH, PGDATA: data.primary, POSTGRES_USER: primaryEnv.POSTGRES_USER!, POSTGRES_DB: primaryEnv.POSTGRES_DB!, REPLICATION_PASSWORD_FILE: map.path('/run/secrets/replication_password') },
    });
    expect(initScript).toMatchObject({ code: 0 });
    await run(join(PG_BIN, 'pg_ctl'), ['-D', data.primary, '-m', 'fast', '-w', 'stop'], { asPostgres: true });
    procs.start('postgres', join(PG_BIN, 'postgres'), ['-D', data.primary, ...postgresArgs('postgres'), ...local], { asPostgres: true, env: pgbackrestEnv() });
    expect((await waitFor(() => healthcheck('postgres'), (r) => r.code === 0, 30_000)).code).toBe(0);

    // pgBackRest side-car (the shipped script), the replica (the shipped entrypoint), PgBouncer
    // (rendered as the image renders it), Redis with the compose command.
    procs.start('pgbackrest', 'sh', [join(ROOT, 'deploy/pgbackrest/sidecar.sh')], { asPostgres: true, env: { ...pgbackrestEnv(), ...map.environment('pgbackrest') } });
    const replicaEnv = map.environment('postgres-replica');
    const replicaData = replicaEnv.PGDATA!.replace('/var/lib/postgresql/data', data.replicaVolume);
    procs.start('postgres-replica', 'bash', [join(ROOT, 'deploy/postgres/replica-entrypoint.sh'), ...postgresArgs('postgres-replica'), '-c', `port=${map.port('postgres-replica', 5432)}`, '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${data.sockReplica}`, '-c', 'fsync=off', '-c', 'shared_buffers=32MB'], {
      asPostgres: true,
      env: {
        ...pgbackrestEnv(),
        PGDATA: replicaData,
        PGBACKREST_PG1_PATH: replicaEnv.PGBACKREST_PG1_PATH!.replace('/var/lib/postgresql/data', data.replicaVolume),
        PGBACKREST_PG1_PORT: String(map.port('postgres-replica', 5432)),
        PGBACKREST_PG1_SOCKET_PATH: data.sockReplica,
        PRIMARY_HOST: '127.0.0.1',
        PRIMARY_PORT: String(map.port('postgres', 5432)),
        REPLICATION_PASSWORD_FILE: map.path('/run/secrets/replication_password'),
      },
    });
    const bouncerDir = join(dir, 'pgbouncer');
    mkdirSync(bouncerDir);
    chownSync(bouncerDir, POSTGRES_UID, POSTGRES_GID);
    const files = renderPgbouncer(
      { ...bouncerEnv, DB_HOST: '127.0.0.1', DB_PORT: String(map.port('postgres', Number(bouncerEnv.DB_PORT ?? 5432))), LISTEN_PORT: String(map.port('pgbouncer', Number(bouncerEnv.LISTEN_PORT ?? 5432))), LISTEN_ADDR: '127.0.0.1' },
      join(bouncerDir, 'userlist.txt'),
    );
    writeFileSync(join(bouncerDir, 'pgbouncer.ini'), files.ini);
    writeFileSync(join(bouncerDir, 'userlist.txt'), files.userlist, { mode: 0o600 });
    chownSync(join(bouncerDir, 'userlist.txt'), POSTGRES_UID, POSTGRES_GID);
    procs.start('pgbouncer', '/usr/sbin/pgbouncer', [join(bouncerDir, 'pgbouncer.ini')], { asPostgres: true });
    const redisDir = join(dir, 'redis');
    mkdirSync(redisDir);
    procs.start('redis', 'redis-server', [...(map.service('redis').command ?? []).slice(1), '--port', String(map.port('redis', 6379)), '--bind', '127.0.0.1', '--dir', redisDir, '--save', '']);

    // The migrate step finishes once the real server is up; then the API instances start.
    expect(await procs.exited('migrate')).toBe(0);
    expect(procs.log('migrate')).toMatch(/retrying[\s\S]*migration\(s\) applied|database is up to date/);
    for (const api of ['api-1', 'api-2']) {
      const env = map.processEnv(api, {
        HOST: '127.0.0.1',
        PORT: String(map.port(api, Number(map.environment(api).PORT))),
        METRICS_PORT: String(map.port(api, Number(map.environment(api).METRICS_PORT))),
      });
      procs.start(api, process.execPath, ['--import', 'tsx', 'src/server.ts'], { env, cwd: ROOT });
    }

    // Exporters, Alertmanager with a webhook receiver, Prometheus, HAProxy.
    procs.start('postgres-exporter', '/usr/bin/prometheus-postgres-exporter', [`--web.listen-address=127.0.0.1:${map.port('postgres-exporter', 9187)}`], { env: map.processEnv('postgres-exporter') });
    procs.start('redis-exporter', '/usr/bin/prometheus-redis-exporter', [`--web.listen-address=127.0.0.1:${map.port('redis-exporter', 9121)}`], { env: map.processEnv('redis-exporter') });
    webhookServer = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const payload = JSON.parse(body) as { alerts: { labels: Record<string, string>; status: string }[] };
        for (const a of payload.alerts) webhook.push({ alertname: a.labels.alertname!, status: a.status, at: Date.now() });
        res.end();
      });
    });
    await new Promise<void>((resolve) => webhookServer.listen(0, '127.0.0.1', resolve));
    const webhookUrl = `http://127.0.0.1:${(webhookServer.address() as { port: number }).port}/sav3`;
    const am = readYaml<{ receivers: { webhook_configs?: { url: string }[] }[] }>('monitoring/alertmanager.yml');
    for (const r of am.receivers) for (const w of r.webhook_configs ?? []) w.url = webhookUrl;
    writeFileSync(join(dir, 'alertmanager.yml'), stringify(am));
    alertmanager = `http://127.0.0.1:${map.port('alertmanager', 9093)}`;
    procs.start('alertmanager', '/usr/bin/prometheus-alertmanager', [`--config.file=${join(dir, 'alertmanager.yml')}`, `--storage.path=${join(dir, 'am-data')}`, `--web.listen-address=127.0.0.1:${map.port('alertmanager', 9093)}`, '--cluster.listen-address=']);
    const shipped = readYaml<{ scrape_configs: { job_name: string; static_configs: { targets: string[] }[]; scrape_interval?: string; scrape_timeout?: string }[]; alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] } }>('monitoring/prometheus.yml');
    const promConfig = {
      ...shipped,
      global: { scrape_interval: `${SCRAPE_SECONDS}s`, evaluation_interval: `${EVAL_SECONDS}s` },
      rule_files: [join(ROOT, 'monitoring/alerts.yml')],
      alerting: { alertmanagers: shipped.alerting.alertmanagers.map((a) => ({ static_configs: a.static_configs.map((s) => ({ targets: s.targets.map((t) => map.url(t)) })) })) },
      // Traefik's own metrics: HAProxy stands in for Traefik and has none of that name.
      scrape_configs: shipped.scrape_configs
        .filter((j) => j.job_name !== 'traefik')
        .map((j) => ({ ...j, scrape_interval: `${SCRAPE_SECONDS}s`, scrape_timeout: `${SCRAPE_SECONDS}s`, static_configs: j.static_configs.map((s) => ({ targets: s.targets.map((t) => map.url(t)) })) })),
    };
    scrapeTargets = promConfig.scrape_configs.flatMap((j) => j.static_configs.flatMap((s) => s.targets)).length;
    writeFileSync(join(dir, 'prometheus.yml'), stringify(promConfig));
    prometheus = `http://127.0.0.1:${map.port('prometheus', 9090)}`;
    procs.start('prometheus', '/usr/bin/prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'prom-data')}`, `--web.listen-address=127.0.0.1:${map.port('prometheus', 9090)}`]);

    const dynamic = readYaml<{ http: { services: Record<string, { loadBalancer: { servers: { url: string }[]; healthCheck: { path: string; interval: string; timeout: string } } }> } }>('traefik/dynamic.yml');
    const service = dynamic.http.services['sav3-api']!.loadBalancer;
    const lbPort = await deadPort();
    const external = Object.values(networkInterfaces()).flat().find((i) => i?.family === 'IPv4' && !i.internal)?.address;
    const servers = service.servers.map((s, i) => `  server s${i + 1} ${map.url(new URL(s.url).host)} check`);
    writeFileSync(
      join(dir, 'haproxy.cfg'),
      [
        'global',
        '  log stderr format raw local0 err',
        'defaults',
        '  mode http',
        '  timeout connect 1s',
        '  timeout client 30s',
        '  timeout server 30s',
        // Traefik's retry middleware: a request whose instance cannot be reached goes to another.
        '  retries 2',
        '  option redispatch 1',
        '  retry-on conn-failure empty-response',
        'frontend web',
        `  bind 127.0.0.1:${lbPort}`,
        ...(external ? [`  bind ${external}:${lbPort}`] : []),
        '  option forwardfor',
        '  default_backend sav3-api',
        'backend sav3-api',
        '  balance roundrobin',
        `  option httpchk GET ${service.healthCheck.path}`,
        '  http-check expect status 200',
        `  timeout check ${service.healthCheck.timeout}`,
        `  default-server inter ${service.healthCheck.interval} fall 1 rise 1`,
        ...servers,
        '',
      ].join('\n'),
    );
    procs.start('haproxy', '/usr/sbin/haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db']);
    lb = `http://127.0.0.1:${lbPort}`;
    lbExternal = external ? `http://${external}:${lbPort}` : undefined;
    const ready = await waitFor(() => fetch(`${lb}/health/ready`).then((r) => r.status, () => 0), (s) => s === 200, 60_000, 500);
    if (ready !== 200) throw new Error(`the stack did not become ready:\n${procs.log('api-1').slice(-3000)}`);
  }, 180_000);

  afterAll(async () => {
    await procs.stopAll();
    for (const d of [data.primary, join(data.replicaVolume, 'pgdata')]) {
      await run(join(PG_BIN, 'pg_ctl'), ['-D', d, '-m', 'immediate', '-w', 'stop'], { asPostgres: true, timeoutMs: 15_000 });
    }
    for (const s of Object.values(s3)) await s.destroy();
    webhookServer?.close();
    if (!process.env.KEEP_TOPOLOGY) rmSync(dir, { recursive: true, force: true });
  });

  it('passes every health check in the compose file', async () => {
    const checks: Record<string, number> = {};
    for (const service of ['postgres', 'postgres-replica', 'pgbouncer', 'redis', 'minio', 'minio-backup', 'api-1', 'api-2', 'pgbackrest']) {
      const env = service === 'pgbackrest' ? pgbackrestEnv() : {};
      checks[service] = (await waitFor(() => healthcheck(service, env), (r) => r.code === 0, 60_000, 1000)).code;
    }
    expect(checks).toEqual({ postgres: 0, 'postgres-replica': 0, pgbouncer: 0, redis: 0, minio: 0, 'minio-backup': 0, 'api-1': 0, 'api-2': 0, pgbackrest: 0 });
    // Every service with a health check in the compose file is covered.
    const withChecks = Object.entries(map.compose.services).filter(([, s]) => s.healthcheck).map(([n]) => n).sort();
    expect(withChecks).toEqual(Object.keys(checks).sort());
  });

  it('serves uploads through the load balancer, metadata through PgBouncer in transaction mode', async () => {
    expect(readFileSync(join(dir, 'pgbouncer', 'pgbouncer.ini'), 'utf8')).toMatch(/^pool_mode = transaction$/m);
    const body = Buffer.from(`topology ${Date.now()}`);
    const put = await fetch(`${lb}/media/topology/one.txt`, { method: 'PUT', body, headers: { 'Content-Type': 'text/plain' } });
    expect(put.status).toBe(201);
    const sha = createHash('sha256').update(body).digest('hex');
    expect(((await put.json()) as { sha256: string }).sha256).toBe(sha);
    // Read back several times: round robin serves it from both instances.
    for (let i = 0; i < 4; i += 1) {
      const get = await fetch(`${lb}/media/topology/one.txt`);
      expect(get.status).toBe(200);
      expect(Buffer.from(await get.arrayBuffer())).toEqual(body);
    }
    const db = (await (await fetch(`${lb}/health/database`)).json()) as { status: string; target: string };
    expect(db).toMatchObject({ status: 'healthy', target: 'primary' });

    // Load from both instances: every request succeeds and PostgreSQL sees no more server
    // connections than PgBouncer's MAX_DB_CONNECTIONS (the pool is shared and bounded).
    const bouncer = map.environment('pgbouncer');
    const watcher = new pg.Client({ connectionString: readFileSync(map.path('/run/secrets/database_migrate_url'), 'utf8').trim() });
    await watcher.connect();
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows } = await watcher.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()", [bouncer.DB_USER]);
        peak = Math.max(peak, rows[0]!.n);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const statuses = await Promise.all(
      Array.from({ length: 150 }, (_, i) =>
        i % 3 === 0
          ? fetch(`${lb}/media/topology/load-${i}.txt`, { method: 'PUT', body: `load ${i}`, headers: { 'Content-Type': 'text/plain' } }).then((r) => r.status, () => 0)
          : fetch(`${lb}/media?limit=5`).then((r) => r.status, () => 0),
      ),
    );
    sampling = false;
    await sampler;
    await watcher.end();
    expect(statuses.filter((st, i) => st !== (i % 3 === 0 ? 201 : 200))).toEqual([]);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(Number(bouncer.MAX_DB_CONNECTIONS) + 2);
    console.log(`150 concurrent requests through the load balancer: all succeeded; peak PostgreSQL connections of ${bouncer.DB_USER}: ${peak} (MAX_DB_CONNECTIONS ${bouncer.MAX_DB_CONNECTIONS})`);
  });

  it('probes through PgBouncer with the statement timeout set after connecting, and it does not leak', async () => {
    const url = readFileSync(map.path('/run/secrets/database_url'), 'utf8').trim();
    const signal = new AbortController().signal;
    const inside = await withProbeConnection({ connectionString: url, timeoutMs: 1234, signal }, async (c) => (await c.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows[0]!.statement_timeout);
    expect(inside).toBe('1234ms');
    const after = new pg.Client({ connectionString: url });
    await after.connect();
    const outside: string[] = [];
    for (let i = 0; i < 5; i += 1) outside.push((await after.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows[0]!.statement_timeout);
    await after.end();
    expect(new Set(outside)).toEqual(new Set(['0']));
    // What the old probe sent: PgBouncer refuses it, and the code says so (not "timeout").
    const old = new pg.Client({ connectionString: url, statement_timeout: 1000 });
    old.on('error', () => undefined);
    const err = await old.connect().then(() => undefined, (e: unknown) => e);
    await old.end().catch(() => undefined);
    expect(String(err)).toMatch(/unsupported startup parameter/);
    expect(classifyError(err).code).toBe('connection_refused');
  });

  it('exposes no metrics and no admin API to the outside', async () => {
    expect((await fetch(`${lb}/metrics`)).status).toBe(404);
    const metricsPort = map.port('api-1', Number(map.environment('api-1').METRICS_PORT));
    expect(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).toMatch(/^sav3_dr_state_version/m);
    // Loopback clients (the default allow-list) reach the admin API; tokens still decide.
    expect((await fetch(`${lb}/admin/dr/state`)).status).toBe(401);
    expect((await fetch(`${lb}/admin/dr/state`, { headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` } })).status).toBe(200);
    if (!lbExternal) throw new Error('this machine has no non-loopback IPv4 address to test the allow-list from');
    for (const headers of [{} as Record<string, string>, { 'X-Forwarded-For': '127.0.0.1' }, { Authorization: `Bearer ${OPERATOR_TOKEN}`, 'X-Forwarded-For': '127.0.0.1' }]) {
      const res = await fetch(`${lbExternal}/admin/dr/state`, { headers });
      expect({ headers, status: res.status }).toEqual({ headers, status: 403 });
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('address_not_allowed');
    }
    expect((await fetch(`${lbExternal}/health/live`)).status).toBe(200);
  });

  it('fires APIServiceDown, MediaStorageDown, DatabaseDown, RedisDown and HealthProbeFailing on real outages within `for` + two scrapes, and Alertmanager receives them', async () => {
    // Every target is scraped and nothing fires before the outages.
    const up = await waitFor(
      () => fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent('up')}`).then((r) => r.json() as Promise<{ data: { result: { metric: { job: string }; value: [number, string] }[] } }>, () => undefined),
      (r) => r?.data.result.length === scrapeTargets && r.data.result.every((s) => s.value[1] === '1'),
      30_000,
      1000,
    );
    expect(up?.data.result.length).toBe(scrapeTargets);
    expect(up?.data.result.filter((s) => s.value[1] !== '1')).toEqual([]);
    const pgUp = await fetch(`${prometheus}/api/v1/query?query=pg_up`).then((r) => r.json() as Promise<{ data: { result: { value: [number, string] }[] } }>);
    expect(pgUp.data.result.map((s) => s.value[1])).toEqual(['1']);
    expect((await alerts()).filter((a) => a.state === 'firing')).toEqual([]);

    const outages = ['APIServiceDown', 'MediaStorageDown', 'DatabaseDown', 'RedisDown', 'HealthProbeFailing'];
    const started: Record<string, number> = {};
    const fired: Record<string, number> = {};
    // The API's own probe runs every HEALTH_INTERVAL_MS (default 5 s) before its gauge changes.
    const probeLag = (name: string) => (name === 'HealthProbeFailing' ? 5 + 1 : 0);
    const bound = (name: string) => forSeconds(name) + 2 * SCRAPE_SECONDS + EVAL_SECONDS + probeLag(name);
    const labels: Record<string, Record<string, string>> = { HealthProbeFailing: { dependency: 'media', target: 'primary' } };
    const watch = (async () => {
      // Until all fired, or every one is well past its bound (the check below then fails).
      while (!outages.every((n) => fired[n] || (started[n] && Date.now() - started[n]! > (bound(n) + 10) * 1000))) {
        for (const name of Object.keys(started)) if (!fired[name] && (await firing(name, labels[name]))) fired[name] = Date.now();
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    // An API instance dies; steady traffic keeps succeeding through the other.
    const results: number[] = [];
    let traffic = true;
    const load = (async () => {
      while (traffic) results.push(await fetch(`${lb}/media?limit=1`).then((r) => r.status, () => 0));
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
    console.log(`one API instance killed: ${results.length} sequential requests through the load balancer in the next 8 s, all 200`);

    // PostgreSQL dies (the postmaster is killed); the exporter keeps answering with pg_up 0.
    started.DatabaseDown = Date.now();
    process.kill(postmasterPid(data.primary), 'SIGKILL');
    // Redis dies too; its exporter keeps answering with redis_up 0.
    started.RedisDown = Date.now();
    await procs.stop('redis', 'SIGKILL');
    await waitFor(async () => (await query('pg_up')).map((s) => s.value[1]), (v) => v[0] === '0', 10_000, 500);
    expect((await query('pg_up')).map((s) => s.value[1])).toEqual(['0']);
    expect((await query('redis_up')).map((s) => s.value[1])).toEqual(['0']);
    // The surviving instance tells the truth about the database behind PgBouncer.
    const apiPort = map.port('api-1', Number(map.environment('api-1').PORT));
    const dbHealth = await waitFor(() => fetch(`http://127.0.0.1:${apiPort}/health/database`).then(async (r) => ({ status: r.status, body: (await r.json()) as { error?: { code: string } } })), (r) => r.status === 503, 15_000, 500);
    expect(dbHealth.status).toBe(503);
    expect(['connection_refused', 'timeout']).toContain(dbHealth.body.error?.code);
    console.log(`PostgreSQL killed behind PgBouncer: /health/database 503 with error.code ${dbHealth.body.error?.code}`);
    await watch;
    const timings: Record<string, string> = {};
    for (const name of outages) timings[name] = `${((fired[name]! - started[name]!) / 1000).toFixed(1)} s (for ${forSeconds(name)} s, bound ${bound(name)} s)`;
    console.log(`alert firing times after the outage: ${JSON.stringify(timings, null, 1)}`);
    for (const name of outages) {
      const took = fired[name] === undefined ? Infinity : (fired[name]! - started[name]!) / 1000;
      expect({ name, within: took <= bound(name), took }).toEqual({ name, within: true, took });
    }
    // The exporters themselves stayed up: only pg_up / redis_up could have fired these.
    expect((await query('up{job=~"postgres|redis"}')).map((s) => s.value[1])).toEqual(['1', '1']);

    // Alertmanager holds all three; the critical ones reach the webhook (group_wait 10s).
    const received = await waitFor(
      () => fetch(`${alertmanager}/api/v2/alerts`).then((r) => r.json() as Promise<{ labels: Record<string, string> }[]>, () => []),
      (list) => outages.every((n) => list.some((a) => a.labels.alertname === n)),
      15_000,
      500,
    );
    expect(received.map((a) => a.labels.alertname)).toEqual(expect.arrayContaining(outages));
    await waitFor(async () => webhook, (w) => ['APIServiceDown', 'DatabaseDown'].every((n) => w.some((a) => a.alertname === n && a.status === 'firing')), 20_000, 500);
    expect(webhook.filter((a) => a.status === 'firing').map((a) => a.alertname)).toEqual(expect.arrayContaining(['APIServiceDown', 'DatabaseDown']));
  });

  it('after a failover the promoted replica archives WAL to the same repository', async () => {
    const replicaData = join(data.replicaVolume, 'pgdata');
    const replicaEnv = {
      ...pgbackrestEnv(),
      PGBACKREST_PG1_PATH: replicaData,
      PGBACKREST_PG1_PORT: String(map.port('postgres-replica', 5432)),
      PGBACKREST_PG1_SOCKET_PATH: data.sockReplica,
    };
    expect((await run(join(PG_BIN, 'pg_ctl'), ['-D', replicaData, '-w', 'promote'], { asPostgres: true })).code).toBe(0);
    const check = await run('pgbackrest', ['--stanza=main', 'check'], { asPostgres: true, env: replicaEnv, timeoutMs: 90_000 });
    expect(check).toMatchObject({ code: 0 });
    const psql = await run(join(PG_BIN, 'psql'), ['-h', data.sockReplica, '-p', String(map.port('postgres-replica', 5432)), '-U', 'sav3', '-d', 'sav3', '-Atc', 'SELECT pg_is_in_recovery(), archived_count > 0, failed_count FROM pg_stat_archiver'], { asPostgres: true });
    expect(psql.out.trim()).toBe('f|t|0');
  });

  it('the pgBackRest side-car fails loudly when the stanza cannot be created', async () => {
    const broken = join(dir, 'pgbackrest-broken.conf');
    writeFileSync(broken, readFileSync(pgbackrestConf, 'utf8').replace(/pg1-port=\d+/, `pg1-port=${await deadPort()}`).replace(/repo1-path=.*/, `repo1-path=${dir}/repo-broken`));
    appendFileSync(broken, '\n');
    chownSync(broken, POSTGRES_UID, POSTGRES_GID);
    const started = Date.now();
    const result = await run('sh', [join(ROOT, 'deploy/pgbackrest/sidecar.sh')], { asPostgres: true, env: { PGBACKREST_CONFIG: broken, PATH, STANZA_CREATE_ATTEMPTS: '2' }, timeoutMs: 30_000 });
    expect(result.code).not.toBe(0);
    expect(result.out).toMatch(/stanza-create failed 2 times/);
    expect(Date.now() - started).toBeLessThan(30_000);
  });
});
