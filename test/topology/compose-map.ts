// Reads docker-compose.yml and maps the container world (service host names, container ports,
// container paths, /run/secrets) onto this machine (127.0.0.1, free ports, a temp dir), so the
// topology test runs the compose settings themselves rather than a copy of them. A URL or command
// that names a port its service does not listen on fails the mapping: that is the check.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export const ROOT = join(__dirname, '..', '..');
// PostgreSQL, pgBackRest and PgBouncer run as the `postgres` user; the files they read are theirs.
export const POSTGRES_UID = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
export const POSTGRES_GID = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());

export interface ComposeService {
  image?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  env_file?: string | string[];
  secrets?: string[];
  healthcheck?: { test: string[]; interval?: string; timeout?: string; start_period?: string };
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
  restart?: string;
}

export interface Compose {
  services: Record<string, ComposeService>;
  secrets: Record<string, { file: string }>;
}

export function readYaml<T>(path: string): T {
  // merge: compose files use YAML merge keys (<<: *anchor).
  return parse(readFileSync(join(ROOT, path), 'utf8'), { merge: true }) as T;
}

/** Compose's `${VAR:-default}` interpolation, with the variables of an empty .env. */
export function interpolate(value: string, env: Record<string, string> = {}): string {
  return value
    .replace(/\$\{(\w+)(?::-([^}]*))?\}/g, (_m, name: string, fallback?: string) => env[name] ?? fallback ?? '')
    .replace(/\$\$/g, '$');
}

export class ComposeMap {
  readonly compose = readYaml<Compose>('docker-compose.yml');
  /** service → container port → local port */
  private readonly ports = new Map<string, Map<number, number>>();
  /** container path prefix → local path, longest first */
  private readonly paths: [string, string][] = [];

  constructor(readonly dir: string) {}

  service(name: string): ComposeService {
    const service = this.compose.services[name];
    if (!service) throw new Error(`docker-compose.yml has no service ${name}`);
    return service;
  }

  /** The service's environment after interpolation (empty .env), env_file entries first. */
  environment(name: string): Record<string, string> {
    const service = this.service(name);
    const env: Record<string, string> = {};
    for (const file of [service.env_file ?? []].flat()) {
      for (const line of readFileSync(join(ROOT, file), 'utf8').split('\n')) {
        const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
        if (match) env[match[1]!] = match[2]!;
      }
    }
    for (const [key, value] of Object.entries(service.environment ?? {})) env[key] = interpolate(String(value));
    return env;
  }

  listen(service: string, containerPort: number, localPort: number): void {
    if (!this.ports.has(service)) this.ports.set(service, new Map());
    this.ports.get(service)!.set(containerPort, localPort);
  }

  port(service: string, containerPort: number): number {
    const local = this.ports.get(service)?.get(containerPort);
    if (local === undefined) throw new Error(`nothing listens on ${service}:${containerPort} in this topology`);
    return local;
  }

  mapPath(containerPath: string, localPath: string): void {
    this.paths.push([containerPath, localPath]);
    this.paths.sort((a, b) => b[0].length - a[0].length);
  }

  path(containerPath: string): string {
    for (const [from, to] of this.paths) {
      if (containerPath === from || containerPath.startsWith(`${from}/`)) return to + containerPath.slice(from.length);
    }
    throw new Error(`no local path for the container path ${containerPath}`);
  }

  /** `scheme://user:pw@service:port/...` or `service:port/...` with the service's local address. */
  url(value: string): string {
    return value.replace(/(^|[/@])([a-z][a-z0-9-]*):(\d+)/g, (_m, lead: string, host: string, port: string) => {
      if (!this.compose.services[host]) return `${lead}${host}:${port}`;
      return `${lead}127.0.0.1:${this.port(host, Number(port))}`;
    });
  }

  /**
   * The service's secrets as local files readable by `postgres` only (mode 600), URLs inside them
   * mapped; returns the directory that stands for /run/secrets.
   */
  secrets(): string {
    const dir = join(this.dir, 'run-secrets');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chownSync(dir, POSTGRES_UID, POSTGRES_GID);
    for (const [name, { file }] of Object.entries(this.compose.secrets)) {
      const content = readFileSync(join(ROOT, file), 'utf8');
      const target = join(dir, name);
      writeFileSync(target, /^[a-z]+:\/\//.test(content) ? this.url(content.trim()) + '\n' : content);
      chmodSync(target, 0o600);
      chownSync(target, POSTGRES_UID, POSTGRES_GID);
    }
    this.mapPath('/run/secrets', dir);
    return dir;
  }

  /** A process environment from the service's: *_FILE paths and URLs mapped. */
  processEnv(name: string, overrides: Record<string, string> = {}): Record<string, string> {
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(this.environment(name))) {
      if (key in overrides) continue;
      env[key] = key.endsWith('_FILE') ? this.path(value) : this.url(value);
    }
    return { ...env, ...overrides };
  }

  /**
   * A health check's command for this machine: 127.0.0.1:<port>, `-p <port>` and `-h` mapped for
   * `service`; redis-cli gets the port it lacks.
   */
  healthcheck(service: string): string[] {
    const test = this.service(service).healthcheck?.test;
    if (!test || test[0] !== 'CMD') throw new Error(`${service}: no exec-form health check`);
    const argv = test
      .slice(1)
      .map((arg) => arg.replace(/127\.0\.0\.1:(\d+)/g, (_m, p: string) => `127.0.0.1:${this.port(service, Number(p))}`));
    const p = argv.indexOf('-p');
    if (p >= 0) argv[p + 1] = String(this.port(service, Number(argv[p + 1])));
    if (argv[0] === 'redis-cli') argv.splice(1, 0, '-p', String(this.port(service, 6379)));
    if (argv[0] === 'pg_isready' && p < 0) argv.push('-p', String(this.port(service, 5432)));
    return argv;
  }
}
