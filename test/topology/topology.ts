// The docker-compose.yml topology started natively, from the compose file and deploy/, with the
// real programs Debian has (PostgreSQL 15, pgBackRest, PgBouncer, Redis, HAProxy standing in for
// Traefik with its health check, Prometheus, Alertmanager, the postgres and redis exporters) and
// s3rver standing in for the two MinIO servers. Container host names, ports and paths are mapped
// onto 127.0.0.1, free ports and a temp dir (compose-map.ts); 127.0.0.1 plays the other
// containers, so pg_hba has no loopback trust here and every TCP login is SCRAM.
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as Minio from 'minio';
import { stringify } from 'yaml';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { ComposeMap, POSTGRES_GID, POSTGRES_UID, readYaml, ROOT } from './compose-map.ts';
import { renderPgbouncer } from './pgbouncer-ini.ts';
import { PG_BIN, Processes, run, type RunResult } from './processes.ts';
import { eventually, freePort } from '../../support/common.ts';

/** Test intervals; the alert rules' `for` durations stay as shipped. */
export const SCRAPE_SECONDS = 2;
export const EVAL_SECONDS = 1;
export const PATH = `${PG_BIN}:${process.env.PATH}`;
// Settings for this machine only, on top of the compose command.
/** Compose services this topology does not start (they have tests of their own). */
export const NOT_STARTED = ['worker'];
const LOCAL_PG = ['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'shared_buffers=32MB'];

export interface Alert {
  labels: Record<string, string>;
  state: string;
}

function must(result: RunResult, what: string): void {
  if (result.code !== 0) throw new Error(`${what} failed (exit ${result.code}):\n${result.out.slice(-2000)}`);
}

export class Topology {
  readonly dir = mkdtempSync(join(tmpdir(), 'sav3-topology-'));
  readonly map = new ComposeMap(this.dir);
  readonly procs = new Processes(this.dir);
  readonly s3: Record<string, S3ServerHandle> = {};
  readonly webhook: { alertname: string; status: string; at: number }[] = [];
  readonly data = {
    primary: join(this.dir, 'primary-volume'),
    replicaVolume: join(this.dir, 'replica-volume'),
    repo: join(this.dir, 'pgbackrest-repo'),
    sockPrimary: join(this.dir, 'sock-primary'),
    sockReplica: join(this.dir, 'sock-replica'),
  };
  readonly pgbackrestConf = join(this.dir, 'pgbackrest.conf');
  /** What the start-up itself showed: the compose health check against the first-start server. */
  readonly firstStart = { healthcheckDuringTemporaryServer: -1 };
  lb = '';
  lbExternal: string | undefined;
  prometheus = '';
  alertmanager = '';
  scrapeTargets = 0;
  private webhookServer?: http.Server;

  pgbackrestEnv(extra: Record<string, string> = {}): Record<string, string> {
    return { PGBACKREST_CONFIG: this.pgbackrestConf, PATH, ...extra };
  }

  /** The environment that makes pgBackRest work on the replica's data directory. */
  replicaPgbackrestEnv(): Record<string, string> {
    const replicaEnv = this.map.environment('postgres-replica');
    return this.pgbackrestEnv({
      PGBACKREST_PG1_PATH: replicaEnv.PGBACKREST_PG1_PATH!.replace('/var/lib/postgresql/data', this.data.replicaVolume),
      PGBACKREST_PG1_PORT: String(this.map.port('postgres-replica', 5432)),
      PGBACKREST_PG1_SOCKET_PATH: this.data.sockReplica,
    });
  }

  replicaDataDir(): string {
    return this.map.environment('postgres-replica').PGDATA!.replace('/var/lib/postgresql/data', this.data.replicaVolume);
  }

  /** Runs a service's compose health check, mapped onto this machine. */
  healthcheck(service: string, env: Record<string, string> = {}): Promise<RunResult> {
    const [cmd, ...args] = this.map.healthcheck(service);
    return run(cmd!, args, { env: { PATH, ...env }, asPostgres: cmd === 'pgbackrest', timeoutMs: 90_000 });
  }

  postmasterPid(dataDir: string): number {
    return Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  }

  async alerts(): Promise<Alert[]> {
    const res = await fetch(`${this.prometheus}/api/v1/alerts`).catch(() => undefined);
    if (!res?.ok) return [];
    return ((await res.json()) as { data: { alerts: Alert[] } }).data.alerts;
  }

  async query(q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const res = await fetch(`${this.prometheus}/api/v1/query?query=${encodeURIComponent(q)}`);
    return ((await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } }).data.result;
  }

  async start(): Promise<void> {
    await this.allocate();
    await this.startObjectStores();
    this.writePgbackrestConf();
    await this.startPrimary();
    this.startDatabaseSide();
    await this.startApis();
    await this.startMonitoring();
    await this.startLoadBalancer();
    const ready = await eventually(
      () =>
        fetch(`${this.lb}/health/ready`).then(
          (r) => r.status,
          () => 0,
        ),
      (s) => s === 200,
      60_000,
      500,
    );
    if (ready !== 200) throw new Error(`the stack did not become ready:\n${this.procs.log('api-1').slice(-3000)}`);
  }

  async stop(): Promise<void> {
    await this.procs.stopAll();
    for (const d of [this.data.primary, this.replicaDataDir()]) {
      await run(join(PG_BIN, 'pg_ctl'), ['-D', d, '-m', 'immediate', '-w', 'stop'], { asPostgres: true, timeoutMs: 15_000 });
    }
    for (const s of Object.values(this.s3)) await s.destroy();
    this.webhookServer?.close();
    if (!process.env.KEEP_TOPOLOGY) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Volumes, free ports for every listener, secrets and container paths. */
  private async allocate(): Promise<void> {
    for (const d of Object.values(this.data)) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chownSync(d, POSTGRES_UID, POSTGRES_GID);
    }
    chownSync(this.dir, POSTGRES_UID, POSTGRES_GID);
    const { map } = this;
    const ports = async (service: string, ...containerPorts: number[]) => {
      for (const p of containerPorts) map.listen(service, p, await freePort());
    };
    await ports('postgres', 5432);
    await ports('postgres-replica', 5432);
    await ports('pgbouncer', Number(map.environment('pgbouncer').LISTEN_PORT ?? 5432));
    await ports('redis', 6379);
    for (const api of ['api-1', 'api-2']) await ports(api, Number(map.environment(api).PORT), Number(map.environment(api).METRICS_PORT));
    await ports('postgres-exporter', 9187);
    await ports('redis-exporter', 9121);
    await ports('alertmanager', 9093);
    await ports('prometheus', 9090);
    map.mapPath('/var/lib/postgresql/data', this.data.primary);
    map.mapPath('/var/lib/pgbackrest', this.data.repo);
    map.mapPath('/var/run/postgresql', this.data.sockPrimary);
    map.secrets();
  }

  /** Two s3rver servers for MinIO, also answering MinIO's health and metrics paths (bucket "minio"). */
  private async startObjectStores(): Promise<void> {
    const env = this.map.environment('api-1');
    const secret = readFileSync(this.map.path(env.MEDIA_PRIMARY_SECRET_KEY_FILE!), 'utf8').trim();
    for (const [service, bucket] of [
      ['minio', env.MEDIA_PRIMARY_BUCKET!],
      ['minio-backup', env.MEDIA_BACKUP_BUCKET!],
    ] as const) {
      const s3 = await startS3Server({ bucket, accessKey: env.MEDIA_PRIMARY_ACCESS_KEY!, secretKey: secret });
      this.s3[service] = s3;
      this.map.listen(service, 9000, s3.port);
      const client = new Minio.Client({
        endPoint: '127.0.0.1',
        port: s3.port,
        useSSL: false,
        accessKey: env.MEDIA_PRIMARY_ACCESS_KEY!,
        secretKey: secret,
      });
      await client.makeBucket('minio');
      await client.putObject('minio', 'health/live', Buffer.from(''));
      const metrics = Buffer.from('# TYPE minio_cluster_health_status gauge\nminio_cluster_health_status 1\n');
      await client.putObject('minio', 'v2/metrics/cluster', metrics, metrics.length, { 'Content-Type': 'text/plain; version=0.0.4' });
    }
  }

  /** The shipped pgbackrest.conf with its container paths mapped. */
  private writePgbackrestConf(): void {
    const conf = readFileSync(join(ROOT, 'deploy/pgbackrest/pgbackrest.conf'), 'utf8')
      .split('\n')
      .map((line) => line.replace(/^((?:repo1|pg1)-(?:path|socket-path))=(.*)$/, (_m, k: string, v: string) => `${k}=${this.map.path(v)}`))
      .join('\n')
      .replace(
        '[global]',
        `[global]\nlog-path=${this.dir}/pgbackrest-log\nlock-path=${this.dir}/pgbackrest-lock\nspool-path=${this.dir}/pgbackrest-spool`,
      )
      .replace('[main]', `[main]\npg1-port=${this.map.port('postgres', 5432)}`);
    writeFileSync(this.pgbackrestConf, conf);
    chownSync(this.pgbackrestConf, POSTGRES_UID, POSTGRES_GID);
  }

  private postgresArgs(service: string): string[] {
    const command = this.map.service(service).command ?? [];
    return command[0] === 'postgres' ? command.slice(1) : command;
  }

  /**
   * The image's first start (initdb as POSTGRES_USER, a socket-only temporary server with the
   * compose command, CREATE DATABASE, the init script), with the migrate step started meanwhile;
   * then the real server with the compose command.
   */
  private async startPrimary(): Promise<void> {
    const { map, data } = this;
    const env = map.environment('postgres');
    const local = ['-c', `port=${map.port('postgres', 5432)}`, '-c', `unix_socket_directories=${data.sockPrimary}`, ...LOCAL_PG];
    must(
      await run(
        join(PG_BIN, 'initdb'),
        [
          '-D',
          data.primary,
          `--username=${env.POSTGRES_USER}`,
          `--pwfile=${map.path(env.POSTGRES_PASSWORD_FILE!)}`,
          '-E',
          'UTF8',
          '--locale=C.UTF-8',
          '--no-sync',
        ],
        { asPostgres: true },
      ),
      'initdb',
    );
    writeFileSync(join(data.primary, 'pg_hba.conf'), 'local all all trust\nlocal replication all trust\nhost all all all scram-sha-256\n');
    const quoted = [...this.postgresArgs('postgres'), ...local].map((a) => `'${a}'`).join(' ');
    must(
      await run(
        join(PG_BIN, 'pg_ctl'),
        [
          '-D',
          data.primary,
          '-w',
          '-o',
          `${quoted} -c listen_addresses=''`,
          '-l',
          join(this.dir, 'logs', 'postgres-first-start.log'),
          'start',
        ],
        { asPostgres: true, env: this.pgbackrestEnv() },
      ),
      'the temporary server',
    );
    this.firstStart.healthcheckDuringTemporaryServer = (await this.healthcheck('postgres')).code;
    this.procs.start('migrate', process.execPath, ['--import', 'tsx', 'src/migrate.ts'], { env: map.processEnv('migrate'), cwd: ROOT });
    // It must be refused and retry (the real server is not up yet) before the first start goes on.
    await eventually(
      async () => this.procs.log('migrate'),
      (log) => log.includes('not reachable yet'),
      30_000,
      250,
    );
    const sock = { PGHOST: data.sockPrimary, PGPORT: String(map.port('postgres', 5432)) };
    must(
      await run(join(PG_BIN, 'psql'), ['-U', env.POSTGRES_USER!, '-d', 'postgres', '-c', `CREATE DATABASE ${env.POSTGRES_DB}`], {
        asPostgres: true,
        env: sock,
      }),
      'CREATE DATABASE',
    );
    const initEnv = {
      ...sock,
      PATH,
      PGDATA: data.primary,
      POSTGRES_USER: env.POSTGRES_USER!,
      POSTGRES_DB: env.POSTGRES_DB!,
      REPLICATION_PASSWORD_FILE: map.path('/run/secrets/replication_password'),
    };
    must(await run('bash', [join(ROOT, 'deploy/postgres/primary-init.sh')], { asPostgres: true, env: initEnv }), 'primary-init.sh');
    must(
      await run(join(PG_BIN, 'pg_ctl'), ['-D', data.primary, '-m', 'fast', '-w', 'stop'], { asPostgres: true }),
      'stopping the temporary server',
    );
    this.procs.start('postgres', join(PG_BIN, 'postgres'), ['-D', data.primary, ...this.postgresArgs('postgres'), ...local], {
      asPostgres: true,
      env: this.pgbackrestEnv(),
    });
    must(
      await eventually(
        () => this.healthcheck('postgres'),
        (r) => r.code === 0,
        30_000,
        250,
      ),
      'the primary health check',
    );
  }

  /** The side-car script, the replica's entrypoint, PgBouncer as the image renders it, Redis. */
  private startDatabaseSide(): void {
    const { map, data, procs } = this;
    procs.start('pgbackrest', 'sh', [join(ROOT, 'deploy/pgbackrest/sidecar.sh')], {
      asPostgres: true,
      env: this.pgbackrestEnv(map.environment('pgbackrest')),
    });
    const replicaLocal = [
      '-c',
      `port=${map.port('postgres-replica', 5432)}`,
      '-c',
      `unix_socket_directories=${data.sockReplica}`,
      ...LOCAL_PG,
    ];
    procs.start(
      'postgres-replica',
      'bash',
      [join(ROOT, 'deploy/postgres/replica-entrypoint.sh'), ...this.postgresArgs('postgres-replica'), ...replicaLocal],
      {
        asPostgres: true,
        env: {
          ...this.replicaPgbackrestEnv(),
          PGDATA: this.replicaDataDir(),
          PRIMARY_HOST: '127.0.0.1',
          PRIMARY_PORT: String(map.port('postgres', 5432)),
          REPLICATION_PASSWORD_FILE: map.path('/run/secrets/replication_password'),
        },
      },
    );

    const bouncerEnv = map.environment('pgbouncer');
    const bouncerDir = join(this.dir, 'pgbouncer');
    mkdirSync(bouncerDir);
    chownSync(bouncerDir, POSTGRES_UID, POSTGRES_GID);
    const files = renderPgbouncer(
      {
        ...bouncerEnv,
        DB_HOST: '127.0.0.1',
        DB_PORT: String(map.port('postgres', Number(bouncerEnv.DB_PORT ?? 5432))),
        LISTEN_PORT: String(map.port('pgbouncer', Number(bouncerEnv.LISTEN_PORT ?? 5432))),
        LISTEN_ADDR: '127.0.0.1',
      },
      join(bouncerDir, 'userlist.txt'),
    );
    writeFileSync(join(bouncerDir, 'pgbouncer.ini'), files.ini);
    writeFileSync(join(bouncerDir, 'userlist.txt'), files.userlist, { mode: 0o600 });
    chownSync(join(bouncerDir, 'userlist.txt'), POSTGRES_UID, POSTGRES_GID);
    procs.start('pgbouncer', '/usr/sbin/pgbouncer', [join(bouncerDir, 'pgbouncer.ini')], { asPostgres: true });

    const redisDir = join(this.dir, 'redis');
    mkdirSync(redisDir);
    procs.start('redis', 'redis-server', [
      ...(map.service('redis').command ?? []).slice(1),
      '--port',
      String(map.port('redis', 6379)),
      '--bind',
      '127.0.0.1',
      '--dir',
      redisDir,
      '--save',
      '',
    ]);
  }

  /** After the migrate step finished, the two API processes with the compose environment. */
  private async startApis(): Promise<void> {
    const code = await this.procs.exited('migrate');
    if (code !== 0) throw new Error(`migrate exited ${code}:\n${this.procs.log('migrate')}`);
    for (const api of ['api-1', 'api-2']) {
      // Each instance's own state volume (compose: api-N-state at /var/lib/sav3).
      const stateDir = join(this.dir, `${api}-state`);
      mkdirSync(stateDir);
      const env = this.map.processEnv(api, {
        DR_STATE_FILE: join(stateDir, 'dr-state.json'),
        HOST: '127.0.0.1',
        PORT: String(this.map.port(api, Number(this.map.environment(api).PORT))),
        METRICS_PORT: String(this.map.port(api, Number(this.map.environment(api).METRICS_PORT))),
      });
      this.procs.start(api, process.execPath, ['--import', 'tsx', 'src/server.ts'], { env, cwd: ROOT });
    }
  }

  /** Exporters; Alertmanager with the shipped config and a webhook receiver; Prometheus. */
  private async startMonitoring(): Promise<void> {
    const { map, procs, dir } = this;
    procs.start(
      'postgres-exporter',
      '/usr/bin/prometheus-postgres-exporter',
      [`--web.listen-address=127.0.0.1:${map.port('postgres-exporter', 9187)}`],
      { env: map.processEnv('postgres-exporter') },
    );
    procs.start(
      'redis-exporter',
      '/usr/bin/prometheus-redis-exporter',
      [`--web.listen-address=127.0.0.1:${map.port('redis-exporter', 9121)}`],
      { env: map.processEnv('redis-exporter') },
    );

    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const payload = JSON.parse(body) as { alerts: { labels: Record<string, string>; status: string }[] };
        for (const a of payload.alerts) this.webhook.push({ alertname: a.labels.alertname!, status: a.status, at: Date.now() });
        res.end();
      });
    });
    this.webhookServer = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const webhookUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/sav3`;
    const am = readYaml<{ receivers: { webhook_configs?: { url: string }[] }[] }>('monitoring/alertmanager.yml');
    for (const r of am.receivers) for (const w of r.webhook_configs ?? []) w.url = webhookUrl;
    writeFileSync(join(dir, 'alertmanager.yml'), stringify(am));
    this.alertmanager = `http://127.0.0.1:${map.port('alertmanager', 9093)}`;
    procs.start('alertmanager', '/usr/bin/prometheus-alertmanager', [
      `--config.file=${join(dir, 'alertmanager.yml')}`,
      `--storage.path=${join(dir, 'am-data')}`,
      `--web.listen-address=127.0.0.1:${map.port('alertmanager', 9093)}`,
      '--cluster.listen-address=',
    ]);

    type Targets = { static_configs: { targets: string[] }[] };
    const shipped = readYaml<{ scrape_configs: (Targets & { job_name: string })[]; alerting: { alertmanagers: Targets[] } }>(
      'monitoring/prometheus.yml',
    );
    const mapped = (t: Targets) => ({ static_configs: t.static_configs.map((s) => ({ targets: s.targets.map((x) => map.url(x)) })) });
    const config = {
      ...shipped,
      global: { scrape_interval: `${SCRAPE_SECONDS}s`, evaluation_interval: `${EVAL_SECONDS}s` },
      rule_files: [join(ROOT, 'monitoring/alerts.yml')],
      alerting: { alertmanagers: shipped.alerting.alertmanagers.map(mapped) },
      // Traefik's own metrics: HAProxy stands in for Traefik and has none of that name. The backup
      // worker is not part of this topology (NOT_STARTED).
      scrape_configs: shipped.scrape_configs
        .filter(
          (j) => j.job_name !== 'traefik' && !j.static_configs.some((c) => c.targets.some((t) => NOT_STARTED.includes(t.split(':')[0]!))),
        )
        .map((j) => ({ ...j, scrape_interval: `${SCRAPE_SECONDS}s`, scrape_timeout: `${SCRAPE_SECONDS}s`, ...mapped(j) })),
    };
    this.scrapeTargets = config.scrape_configs.flatMap((j) => j.static_configs.flatMap((s) => s.targets)).length;
    writeFileSync(join(dir, 'prometheus.yml'), stringify(config));
    this.prometheus = `http://127.0.0.1:${map.port('prometheus', 9090)}`;
    procs.start('prometheus', '/usr/bin/prometheus', [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'prom-data')}`,
      `--web.listen-address=127.0.0.1:${map.port('prometheus', 9090)}`,
    ]);
  }

  /**
   * HAProxy in Traefik's place: the servers, health check path, interval and timeout of
   * traefik/dynamic.yml, one X-Forwarded-For hop, and a retry elsewhere when an instance cannot be
   * reached (Traefik's retry middleware). It also listens on a non-loopback address, for the
   * allow-list test.
   */
  private async startLoadBalancer(): Promise<void> {
    const dynamic = readYaml<{
      http: {
        services: Record<
          string,
          { loadBalancer: { servers: { url: string }[]; healthCheck: { path: string; interval: string; timeout: string } } }
        >;
      };
    }>('traefik/dynamic.yml');
    const service = dynamic.http.services['sav3-api']!.loadBalancer;
    const port = await freePort();
    const external = Object.values(networkInterfaces())
      .flat()
      .find((i) => i?.family === 'IPv4' && !i.internal)?.address;
    const config = [
      'global',
      '  log stderr format raw local0 err',
      'defaults',
      '  mode http',
      '  timeout connect 1s',
      '  timeout client 30s',
      '  timeout server 30s',
      '  retries 2',
      '  option redispatch 1',
      '  retry-on conn-failure empty-response',
      'frontend web',
      `  bind 127.0.0.1:${port}`,
      ...(external ? [`  bind ${external}:${port}`] : []),
      '  option forwardfor',
      '  default_backend sav3-api',
      'backend sav3-api',
      '  balance roundrobin',
      `  option httpchk GET ${service.healthCheck.path}`,
      '  http-check expect status 200',
      `  timeout check ${service.healthCheck.timeout}`,
      `  default-server inter ${service.healthCheck.interval} fall 1 rise 1`,
      ...service.servers.map((s, i) => `  server s${i + 1} ${this.map.url(new URL(s.url).host)} check`),
      '',
    ];
    writeFileSync(join(this.dir, 'haproxy.cfg'), config.join('\n'));
    this.procs.start('haproxy', '/usr/sbin/haproxy', ['-f', join(this.dir, 'haproxy.cfg'), '-db']);
    this.lb = `http://127.0.0.1:${port}`;
    this.lbExternal = external ? `http://${external}:${port}` : undefined;
  }
}
