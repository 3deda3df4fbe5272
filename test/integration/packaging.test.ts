import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { parse } from 'yaml';
import { CONFIG_VARIABLES } from '../../src/config/config.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, startInstance, type TestInstance } from '../support/instance.ts';

const ROOT = join(__dirname, '..', '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
// merge: compose files use YAML merge keys (<<: *anchor), which YAML 1.2 leaves off by default.
const yaml = (path: string) => parse(read(path), { merge: true }) as Record<string, any>;

type Service = {
  environment?: Record<string, string>;
  depends_on?: Record<string, unknown> | string[];
  secrets?: string[];
  build?: string | { context: string; dockerfile?: string };
  volumes?: string[];
  ports?: string[];
  restart?: string;
  healthcheck?: { test: string[]; start_period?: string };
};
const compose = yaml('docker-compose.yml') as { services: Record<string, Service>; secrets: Record<string, { file: string }> };
const serviceNames = new Set(Object.keys(compose.services));

describe('monitoring configuration', () => {
  it('passes promtool check config', () => {
    const out = execFileSync('promtool', ['check', 'config', 'prometheus.yml'], { cwd: join(ROOT, 'monitoring'), encoding: 'utf8' });
    expect(out).toContain('SUCCESS');
  });

  it('every alert has a unit test, and promtool test rules passes them all', () => {
    const alerts = (yaml('monitoring/alerts.yml').groups as { rules: { alert: string }[] }[]).flatMap((g) => g.rules.map((r) => r.alert));
    expect(alerts).toEqual(expect.arrayContaining(['DatabaseDown', 'MediaStorageDown', 'APIServiceDown']));
    const tests = (
      yaml('monitoring/alerts.test.yml').tests as { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[]
    ).flatMap((t) => t.alert_rule_test);
    for (const alert of alerts) {
      const cases = tests.filter((t) => t.alertname === alert);
      expect({ alert, fires: cases.some((c) => c.exp_alerts.length > 0), silent: cases.some((c) => c.exp_alerts.length === 0) }).toEqual({
        alert,
        fires: true,
        silent: true,
      });
    }
    const out = execFileSync('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: join(ROOT, 'monitoring'), encoding: 'utf8' });
    expect(out).toContain('SUCCESS');
  });

  it('scrapes only services that exist, under the job names the runbook alerts use', () => {
    const jobs = yaml('monitoring/prometheus.yml').scrape_configs as { job_name: string; static_configs: { targets: string[] }[] }[];
    expect(jobs.map((j) => j.job_name)).toEqual(expect.arrayContaining(['api', 'postgres', 'minio']));
    for (const job of jobs)
      for (const target of job.static_configs.flatMap((s) => s.targets)) expect(serviceNames).toContain(target.split(':')[0]);
  });

  it('the Grafana dashboard is valid JSON whose panels all query Prometheus', () => {
    const dashboard = JSON.parse(read('monitoring/grafana/dashboards/sav3-dr.json')) as { panels: { targets: { expr: string }[] }[] };
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(8);
    for (const panel of dashboard.panels) expect(panel.targets.length).toBeGreaterThan(0);
  });
});

describe('metric names used by alerts and dashboards', () => {
  let primary: S3ServerHandle;
  let backup: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    primary = await startS3Server({ bucket: 'pack-primary' });
    backup = await startS3Server({ bucket: 'pack-backup' });
    api = await startInstance({
      ...mediaEnv('PRIMARY', primary),
      ...mediaEnv('BACKUP', backup),
      DATABASE_REPLICA_URL: process.env.TEST_DATABASE_URL,
      MEDIA_CONTINUOUS_BACKUP: 'true',
    });
    await request(api.url).get('/health');
  });
  afterAll(async () => {
    await api.stop();
    await primary.destroy();
    await backup.destroy();
  });

  it('are all exported by the running service', async () => {
    const text = (await request(api.url).get('/metrics')).text;
    const exported = new Set<string>();
    for (const match of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
      exported.add(match[1]!);
      if (match[2] === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(`${match[1]}${suffix}`);
    }
    const exprs = [
      ...(yaml('monitoring/alerts.yml').groups as { rules: { expr: string }[] }[]).flatMap((g) => g.rules.map((r) => r.expr)),
      ...(JSON.parse(read('monitoring/grafana/dashboards/sav3-dr.json')) as { panels: { targets: { expr: string }[] }[] }).panels.flatMap(
        (p) => p.targets.map((t) => t.expr),
      ),
    ];
    const used = new Set(exprs.flatMap((e) => e.match(/\b(sav3_\w+|http_request_duration_seconds\w*)\b/g) ?? []));
    expect(used.size).toBeGreaterThanOrEqual(10);
    expect([...used].filter((name) => !exported.has(name))).toEqual([]);
  });
});

describe('docker-compose.yml', () => {
  const apis = Object.entries(compose.services).filter(([, s]) => s.environment?.ADMIN_TOKENS_FILE !== undefined);
  const known = new Set(CONFIG_VARIABLES.flatMap((v) => [v, `${v}_FILE`]));

  it('runs two API replicas and every component the runbook names', () => {
    expect(apis.map(([name]) => name)).toEqual(['api-1', 'api-2']);
    for (const name of [
      'postgres',
      'postgres-replica',
      'pgbackrest',
      'pgbouncer',
      'minio',
      'minio-backup',
      'redis',
      'traefik',
      'prometheus',
      'alertmanager',
      'grafana',
      'migrate',
    ]) {
      expect(serviceNames).toContain(name);
    }
  });

  it('gives the API only variables its config schema knows, and every required one', () => {
    for (const [, service] of apis) {
      const env = Object.keys(service.environment ?? {});
      expect(env.filter((v) => !known.has(v))).toEqual([]);
      expect(env.some((v) => v === 'DATABASE_URL' || v === 'DATABASE_URL_FILE')).toBe(true);
      expect(env).toContain('MEDIA_PRIMARY_ENDPOINT');
    }
    expect(Object.keys(compose.services.migrate!.environment ?? {}).filter((v) => !known.has(v))).toEqual([]);
  });

  it('references only services, secrets and files that exist; secrets are obvious development placeholders', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      const deps = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {});
      for (const dep of deps) expect({ name, dep, exists: serviceNames.has(dep) }).toEqual({ name, dep, exists: true });
      for (const secret of service.secrets ?? []) expect(compose.secrets[secret]).toBeDefined();
      if (typeof service.build === 'string') expect(existsSync(join(ROOT, service.build))).toBe(true);
      else if (service.build) expect(existsSync(join(ROOT, service.build.context, service.build.dockerfile ?? 'Dockerfile'))).toBe(true);
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('./')) expect(existsSync(join(ROOT, source))).toBe(true);
      }
    }
    for (const { file } of Object.values(compose.secrets)) {
      const value = read(file);
      expect(value).toMatch(/dev-only/);
    }
  });

  it('orders start-up on health where order matters, and runs migrations once, not in each replica', () => {
    for (const [, service] of apis) {
      expect(service.depends_on).toMatchObject({
        migrate: { condition: 'service_completed_successfully' },
        redis: { condition: 'service_healthy' },
      });
      expect(service.environment?.MIGRATE_ON_START).toBeUndefined();
    }
    expect(compose.services.migrate).toMatchObject({ command: ['node', 'dist/migrate.js'] });
  });
});

describe('traefik', () => {
  const dynamic = yaml('traefik/dynamic.yml').http as {
    routers: Record<string, { service: string; middlewares?: string[]; rule: string }>;
    middlewares: Record<string, Record<string, unknown>>;
    services: Record<string, { loadBalancer: { servers: { url: string }[]; healthCheck: { path: string } } }>;
  };

  it('routes to services and middlewares that exist, on servers that are compose services', () => {
    for (const router of Object.values(dynamic.routers)) {
      expect(dynamic.services[router.service]).toBeDefined();
      for (const m of router.middlewares ?? []) expect(dynamic.middlewares[m]).toBeDefined();
    }
    for (const service of Object.values(dynamic.services)) {
      expect(service.loadBalancer.healthCheck.path).toBe('/health/ready');
      for (const server of service.loadBalancer.servers) expect(serviceNames).toContain(new URL(server.url).hostname);
    }
  });

  it('rate-limits the admin routes, and allows no private range wholesale (the API holds the allow-list)', () => {
    const admin = Object.values(dynamic.routers).find((r) => r.rule.includes('/admin'))!;
    const kinds = admin.middlewares!.flatMap((m) => Object.keys(dynamic.middlewares[m]!));
    expect(kinds).toEqual(expect.arrayContaining(['rateLimit', 'headers']));
    expect(read('traefik/dynamic.yml')).not.toMatch(/172\.16\.0\.0\/12|10\.0\.0\.0\/8|192\.168\.0\.0\/16/);
    expect(yaml('traefik/traefik.yml').accessLog).toBeDefined();
  });

  it('routes only to the API port, never to its metrics port', () => {
    for (const service of Object.values(dynamic.services)) {
      for (const server of service.loadBalancer.servers) {
        const api = compose.services[new URL(server.url).hostname]!;
        expect(new URL(server.url).port).toBe(api.environment!.PORT);
        expect(api.environment!.METRICS_PORT).toBeDefined();
        expect(new URL(server.url).port).not.toBe(api.environment!.METRICS_PORT);
      }
    }
  });
});

describe('docker-compose.yml: what the shipped programs need', () => {
  const env = (name: string) => compose.services[name]!.environment ?? {};
  const secretUrl = (name: string) => new URL(read(compose.secrets[name]!.file).trim());

  it("publishes Traefik's web entry point only: no metrics, dashboard or Prometheus port", () => {
    const published = Object.entries(compose.services)
      .filter(([, s]) => s.ports?.length)
      .map(([name, s]) => [name, s.ports]);
    expect(published).toEqual([['traefik', ['80:80']]]);
  });

  it('points the API at PgBouncer on the port the image listens on, in transaction pooling', () => {
    const bouncer = env('pgbouncer');
    const listen = bouncer.LISTEN_PORT ?? '5432';
    expect(secretUrl('database_url')).toMatchObject({ hostname: 'pgbouncer', port: listen });
    expect(compose.services.pgbouncer!.healthcheck!.test).toEqual(expect.arrayContaining(['-p', listen]));
    expect(bouncer.POOL_MODE).toBe('transaction');
    expect(Number(bouncer.DEFAULT_POOL_SIZE)).toBeGreaterThanOrEqual(20);
    // Migrations take a session-level advisory lock: straight to PostgreSQL, not through PgBouncer.
    expect(secretUrl('database_migrate_url')).toMatchObject({ hostname: 'postgres', port: '5432' });
  });

  it('checks PostgreSQL over TCP (never the socket the first-start temporary server uses) and gives slow starters a start_period', () => {
    for (const name of ['postgres', 'postgres-replica']) {
      expect(compose.services[name]!.healthcheck!.test).toEqual(expect.arrayContaining(['pg_isready', '-h', '127.0.0.1']));
    }
    for (const name of ['postgres', 'postgres-replica', 'pgbackrest', 'api-1', 'api-2'])
      expect(compose.services[name]!.healthcheck!.start_period).toBeDefined();
    expect(compose.services.pgbackrest!.healthcheck!.test).toEqual(['CMD', 'pgbackrest', '--stanza=main', 'check']);
    expect(compose.services.pgbackrest!.restart).toBe('on-failure');
    expect(compose.services.migrate!.restart).toMatch(/^on-failure/);
  });

  it("gives the replica the primary's archive settings, so a promoted replica keeps archiving", () => {
    const primary = (compose.services.postgres as { command: string[] }).command.filter((a) => a.startsWith('archive_'));
    const replica = (compose.services['postgres-replica'] as { command: string[] }).command.filter((a) => a.startsWith('archive_'));
    expect(replica).toEqual(primary);
    expect(primary).toEqual(expect.arrayContaining(['archive_mode=on', 'archive_command=pgbackrest --stanza=main archive-push %p']));
    expect(compose.services['postgres-replica']!.volumes).toEqual(expect.arrayContaining([expect.stringMatching(/^pgbackrest-repo:/)]));
  });

  it('trusts exactly one proxy hop (Traefik), serves metrics internally, and leaves /admin loopback-only unless configured', () => {
    for (const name of ['api-1', 'api-2']) {
      expect(env(name)).toMatchObject({ TRUST_PROXY: '1', METRICS_PORT: '9100', ADMIN_ALLOWED_CIDRS: '${SAV3_ADMIN_ALLOWED_CIDRS:-}' });
    }
    const api = (yaml('monitoring/prometheus.yml').scrape_configs as { job_name: string; static_configs: { targets: string[] }[] }[]).find(
      (j) => j.job_name === 'api',
    )!;
    expect(api.static_configs.flatMap((s) => s.targets)).toEqual(['api-1:9100', 'api-2:9100']);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  it('is multi-stage on a Node LTS base, production dependencies only, non-root, healthcheck without curl, exec-form CMD', () => {
    expect(dockerfile.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(3);
    const major = Number(/node:(\d+)-/.exec(dockerfile)?.[1]);
    expect(major % 2).toBe(0);
    expect(major).toBeGreaterThanOrEqual(20);
    expect(dockerfile).toContain('--omit=dev');
    // The Prisma CLI is an optional peer of @prisma/client ("devOptional"): --omit=dev alone keeps it.
    expect(dockerfile).toMatch(/npm ci --omit=dev --omit=optional/);
    expect(dockerfile).toContain('test ! -e node_modules/prisma');
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/HEALTHCHECK[\s\S]*\/health\/live/);
    expect(dockerfile).not.toMatch(/HEALTHCHECK[^\n]*curl/);
    expect(dockerfile).toMatch(/^CMD \["node", "dist\/server.js"\]$/m);
    expect(dockerfile).toContain('npm run build');
  });
});

describe('the worker service', () => {
  it('compose runs it from its own image with pgBackRest and the PostgreSQL 15 server binaries, with known configuration only', () => {
    const compose = yaml('docker-compose.yml') as {
      services: Record<
        string,
        { build?: { context: string; dockerfile: string }; environment?: Record<string, string>; healthcheck?: { test: string[] } }
      >;
    };
    const worker = compose.services.worker!;
    expect(worker.build).toEqual({ context: '.', dockerfile: 'deploy/worker/Dockerfile' });
    const dockerfile = read('deploy/worker/Dockerfile');
    expect(dockerfile).toContain('FROM postgres:15-bookworm');
    expect(dockerfile).toMatch(/apt-get install[^\n]*pgbackrest/);
    expect(dockerfile).toContain('USER postgres');
    expect(dockerfile).toContain('CMD ["node", "dist/worker.js"]');
    const known = new Set(CONFIG_VARIABLES.flatMap((v) => [v, `${v}_FILE`]));
    expect(Object.keys(worker.environment ?? {}).filter((v) => !known.has(v))).toEqual([]);
    expect(worker.environment).toMatchObject({ PGBACKREST_STANZA: 'main', WORKER_PORT: '3001' });
    expect(worker.healthcheck?.test.join(' ')).toContain('3001/health/ready');
  });
});
