import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { parseAdminTokens, type AdminToken } from './admin-tokens.ts';
import type { MediaBackendName } from '../domain.ts';

export interface MediaBackendConfig {
  name: MediaBackendName;
  endpoint: string;
  accessKey?: string;
  secretKey?: string;
  bucket: string;
  region: string;
}

export interface Config {
  port: number;
  host: string;
  databaseUrl: string;
  databaseReplicaUrl?: string;
  redisUrl: string;
  mediaPrimary: MediaBackendConfig;
  mediaBackup?: MediaBackendConfig;
  adminTokens: AdminToken[];
  healthTimeoutMs: number;
  healthIntervalMs: number;
  logLevel: string;
  mediaMaxBytes: number;
  instanceId: string;
  trustProxy?: boolean | number | string;
  migrateOnStart: boolean;
  shutdownTimeoutMs: number;
  mediaCacheTtlSeconds: number;
  replicationMaxLagSeconds: number;
  databaseDrainMs: number;
  autoReadOnly: boolean;
  autoReadOnlyFailures: number;
  autoReadOnlyRecoveries: number;
  mediaContinuousBackup: boolean;
  mediaSyncConcurrency: number;
  mediaSyncInlineMax: number;
  mediaGcGraceMs: number;
  mediaGcIntervalMs: number;
  mediaS3TimeoutMs: number;
  mediaS3PoolSize: number;
  mediaIdleBodyTimeoutMs: number;
  /** An upload averaging fewer bytes a second than this over the window is cut with 408 (0: off). */
  mediaMinUploadBytesPerSec: number;
  mediaMinUploadRateWindowMs: number;
  mediaSpoolMaxConcurrent: number;
  mediaSpoolMaxBytes: number;
  mediaContentCacheBytes: number;
  /** This instance's copy of the last applied DR state (starts from it when Redis is down). */
  drStateFile: string;
  /** Edge settings: see the block at the end of this file. */
  metricsPort?: number;
  adminAllowList: AdminAllowList;
  backup: BackupConfig;
  /** Incidents: webhook receivers of notifications (Slack/Mattermost-compatible JSON `text`). */
  notifyWebhookUrls: string[];
  /** Incidents: bearer token Alertmanager presents on POST /admin/incidents/alerts (unset: 401). */
  alertmanagerWebhookToken?: string;
  /** DR_STATE_LEASE_MS: writes stop this long after the last confirmation of the shared DR state. */
  drStateLeaseMs: number;
}

/** pgBackRest, the worker and backup validation. */
export interface BackupConfig {
  /** Unset: backup routes answer 503 backups_not_configured. */
  stanza?: string;
  configPath?: string;
  bin: string;
  /** pgBackRest and the PostgreSQL server binaries run as this user when the process is root. */
  osUser: string;
  pgBin: string;
  timeoutMs: number;
  infoCacheMs: number;
  statusIntervalMs: number;
  /** A segment waiting to be archived (a `.ready` file) longer than this means archiving is stuck. */
  archiveStallMs: number;
  maxAgeSeconds: number;
  validationMaxAgeSeconds: number;
  /** A backup job running longer than this is reported overdue (metric, alert, GET /admin/backups), not stopped. */
  runningMaxSeconds: number;
  /** 0: no scheduled validation. */
  validateIntervalSeconds: number;
  scratchDir: string;
  workerPort: number;
  workerInstanceId: string;
  jobPollMs: number;
}

/** Thrown with one line per problem; no line ever contains a variable's value. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.join('\n')}`);
  }
}

const postgresUrl = z.string({ error: 'required' }).refine(isPostgresUrl, { error: 'must be a postgresql:// URL' });
const httpUrl = z.string().refine((v) => /^https?:\/\/[^/]+\/?$/.test(v) && URL.canParse(v), {
  error: 'must be an http(s)://host:port URL without a path',
});
const int = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, { error: `must be a whole number from ${min} to ${max}` })
    .transform(Number)
    .refine((n) => n >= min && n <= max, { error: `must be a whole number from ${min} to ${max}` });
const bool = z.enum(['true', 'false', '1', '0'], { error: 'must be true or false' }).transform((v) => v === 'true' || v === '1');
const bucketName = z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { error: 'must be a valid S3 bucket name' });
const region = z.string().regex(/^[a-z0-9-]{1,32}$/, { error: 'must be a region name such as us-east-1' });
const secret = z.string().min(1, { error: 'must not be empty' });
/** `26h`, `90m`, `45s`, `7d` or a number of seconds. */
const durationText = /^(\d+)(s|m|h|d)?$/;
const toSeconds = (v: string) => {
  const m = durationText.exec(v)!;
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
};
const duration = z
  .string()
  .regex(durationText, { error: 'must be a duration such as 26h, 90m, 45s or 7d' })
  .transform(toSeconds)
  .refine((n) => n > 0, { error: 'must be longer than 0' });
const offOrDuration = z
  .string()
  .regex(/^(off|\d+(s|m|h|d)?)$/, { error: 'must be off or a duration such as 24h' })
  .transform((v) => (v === 'off' ? 0 : toSeconds(v)));

const schema = z.object({
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  DATABASE_URL: postgresUrl,
  DATABASE_REPLICA_URL: postgresUrl.optional(),
  REDIS_URL: z
    .string()
    .refine((v) => /^rediss?:\/\//.test(v) && URL.canParse(v), { error: 'must be a redis:// URL' })
    .default('redis://127.0.0.1:6379'),
  MEDIA_PRIMARY_ENDPOINT: httpUrl,
  MEDIA_PRIMARY_ACCESS_KEY: secret.optional(),
  MEDIA_PRIMARY_SECRET_KEY: secret.optional(),
  MEDIA_PRIMARY_BUCKET: bucketName.default('sav3-media'),
  MEDIA_PRIMARY_REGION: region.default('us-east-1'),
  MEDIA_BACKUP_ENDPOINT: httpUrl.optional(),
  MEDIA_BACKUP_ACCESS_KEY: secret.optional(),
  MEDIA_BACKUP_SECRET_KEY: secret.optional(),
  MEDIA_BACKUP_BUCKET: bucketName.default('sav3-media-backup'),
  MEDIA_BACKUP_REGION: region.default('us-east-1'),
  ADMIN_TOKENS: z.string().optional(),
  HEALTH_TIMEOUT_MS: int(10, 60_000).default(1000),
  HEALTH_INTERVAL_MS: int(100, 3_600_000).default(5000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'must be a pino level' }).default('info'),
  MEDIA_MAX_BYTES: int(1, Number.MAX_SAFE_INTEGER).default(104_857_600),
  INSTANCE_ID: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,100}$/, { error: 'must be 1-100 characters of A-Z a-z 0-9 . _ : -' })
    .optional(),
  TRUST_PROXY: z.string().min(1).optional(),
  MIGRATE_ON_START: bool.default(false),
  SHUTDOWN_TIMEOUT_MS: int(0, 600_000).default(10_000),
  MEDIA_CACHE_TTL_SECONDS: int(1, 3600).default(2),
  REPLICATION_MAX_LAG_SECONDS: int(0, 86_400).default(30),
  DATABASE_DRAIN_MS: int(0, 600_000).default(5000),
  AUTO_READ_ONLY: bool.default(false),
  AUTO_READ_ONLY_FAILURES: int(1, 1000).default(3),
  AUTO_READ_ONLY_RECOVERIES: int(1, 1000).default(3),
  MEDIA_CONTINUOUS_BACKUP: bool.default(false),
  MEDIA_SYNC_CONCURRENCY: int(1, 64).default(4),
  MEDIA_SYNC_INLINE_MAX: int(0, 100_000).default(20),
  // Media storage: version garbage collection, S3 bounds, client-body bounds, spooling.
  MEDIA_GC_GRACE_SECONDS: int(2, 30 * 86_400).default(3600),
  MEDIA_GC_INTERVAL_MS: int(100, 3_600_000).default(30_000),
  MEDIA_S3_TIMEOUT_MS: int(100, 600_000).default(5000),
  MEDIA_S3_POOL_SIZE: int(1, 4096).default(64),
  MEDIA_IDLE_BODY_TIMEOUT_MS: int(100, 3_600_000).default(30_000),
  MEDIA_MIN_UPLOAD_BYTES_PER_SEC: int(0, Number.MAX_SAFE_INTEGER).default(1024),
  MEDIA_MIN_UPLOAD_RATE_WINDOW_MS: int(100, 3_600_000).default(30_000),
  MEDIA_SPOOL_MAX_CONCURRENT: int(0, 10_000).default(8),
  MEDIA_SPOOL_MAX_BYTES: int(0, Number.MAX_SAFE_INTEGER).default(1_073_741_824),
  MEDIA_CONTENT_CACHE_BYTES: int(0, Number.MAX_SAFE_INTEGER).default(67_108_864),
  DR_STATE_FILE: z.string().min(1).optional(),
  // How long an instance acknowledges writes without confirming the shared DR state in Redis
  // (at least 3 re-reads of the state, one a second).
  DR_STATE_LEASE_MS: int(3000, 300_000).default(5000),
  ...edgeVariables(),
  PGBACKREST_STANZA: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, { error: 'must be a stanza name (letters, digits, _ and -)' })
    .optional(),
  PGBACKREST_CONFIG: z.string().regex(/^\//, { error: 'must be an absolute path' }).optional(),
  PGBACKREST_BIN: z.string().min(1).default('pgbackrest'),
  PGBACKREST_OS_USER: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, { error: 'must be a user name' })
    .default('postgres'),
  PGBACKREST_TIMEOUT_MS: int(100, 600_000).default(10_000),
  PGBACKREST_INFO_CACHE_MS: int(0, 3_600_000).default(10_000),
  PG_BIN: z.string().regex(/^\//, { error: 'must be an absolute path' }).default('/usr/lib/postgresql/15/bin'),
  BACKUP_STATUS_INTERVAL_MS: int(100, 3_600_000).default(15_000),
  WAL_ARCHIVE_STALL_MS: int(1000, 3_600_000).default(60_000),
  BACKUP_MAX_AGE: duration.default(26 * 3600),
  BACKUP_VALIDATION_MAX_AGE: duration.default(26 * 3600),
  BACKUP_RUNNING_MAX: duration.default(3600),
  BACKUP_VALIDATE_INTERVAL: offOrDuration.default(0),
  BACKUP_SCRATCH_DIR: z.string().regex(/^\//, { error: 'must be an absolute path' }).optional(),
  WORKER_PORT: int(0, 65535).default(3001),
  WORKER_POLL_MS: int(10, 60_000).default(500),
  NOTIFY_WEBHOOK_URLS: z
    .string()
    .refine((v) => v.split(',').every((u) => /^https?:\/\//.test(u.trim()) && URL.canParse(u.trim())), {
      error: 'must be comma-separated http(s) URLs',
    })
    .optional(),
  ALERTMANAGER_WEBHOOK_TOKEN: z
    .string()
    .regex(/^[\x21-\x7e]{24,512}$/, { error: 'must be 24-512 printable characters without spaces' })
    .optional(),
});

type Raw = z.output<typeof schema>;

/** Every variable the service reads; each may also come from `NAME_FILE`. */
export const CONFIG_VARIABLES = Object.keys(schema.shape) as (keyof Raw)[];

function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//.test(value) && URL.canParse(value);
}

/** Resolves `NAME_FILE` variables (Docker secrets) into plain values. */
function resolveFiles(env: NodeJS.ProcessEnv, problems: string[], failed: Set<string>): Record<string, string | undefined> {
  const values: Record<string, string | undefined> = {};
  for (const name of CONFIG_VARIABLES) {
    const direct = env[name];
    const file = env[`${name}_FILE`];
    if (file !== undefined && direct !== undefined) {
      problems.push(`${name}: set either ${name} or ${name}_FILE, not both`);
      failed.add(name);
      continue;
    }
    if (file !== undefined) {
      try {
        values[name] = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
      } catch {
        problems.push(`${name}_FILE: cannot read the file it names`);
        failed.add(name);
      }
      continue;
    }
    values[name] = direct === '' ? undefined : direct;
  }
  return values;
}

function parseTrustProxy(value: string | undefined): Config['trustProxy'] {
  if (value === undefined) return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  if (/^\d+$/.test(value)) return Number(value);
  return value;
}

function mediaBackend(raw: Raw, name: MediaBackendName): MediaBackendConfig | undefined {
  const prefix = name === 'primary' ? 'MEDIA_PRIMARY' : 'MEDIA_BACKUP';
  const endpoint = raw[`${prefix}_ENDPOINT`];
  if (endpoint === undefined) return undefined;
  return {
    name,
    endpoint,
    accessKey: raw[`${prefix}_ACCESS_KEY`],
    secretKey: raw[`${prefix}_SECRET_KEY`],
    bucket: raw[`${prefix}_BUCKET`],
    region: raw[`${prefix}_REGION`],
  };
}

export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const problems: string[] = [];
  const failed = new Set<string>();
  const values = resolveFiles(env, problems, failed);
  const parsed = schema.safeParse(values);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const name = String(issue.path[0]);
      if (failed.has(name)) continue;
      // Messages are ours (never zod's defaults, which may quote the input).
      const message = issue.code === 'invalid_type' && issue.input === undefined ? 'required' : issue.message;
      problems.push(`${name}: ${message}`);
    }
  }
  for (const prefix of ['MEDIA_PRIMARY', 'MEDIA_BACKUP'] as const) {
    if ((values[`${prefix}_ACCESS_KEY`] === undefined) !== (values[`${prefix}_SECRET_KEY`] === undefined)) {
      problems.push(`${prefix}_SECRET_KEY: give both ${prefix}_ACCESS_KEY and ${prefix}_SECRET_KEY, or neither`);
    }
  }
  let adminTokens: AdminToken[] = [];
  if (values.ADMIN_TOKENS !== undefined) {
    const result = parseAdminTokens(values.ADMIN_TOKENS);
    problems.push(...result.problems.map((p) => `ADMIN_TOKENS: ${p}`));
    adminTokens = result.tokens;
  }
  const raw = parsed.data;
  if (problems.length > 0 || !raw) throw new ConfigError(problems);

  return {
    port: raw.PORT,
    host: raw.HOST,
    databaseUrl: raw.DATABASE_URL,
    databaseReplicaUrl: raw.DATABASE_REPLICA_URL,
    redisUrl: raw.REDIS_URL,
    mediaPrimary: mediaBackend(raw, 'primary')!,
    mediaBackup: mediaBackend(raw, 'backup'),
    adminTokens,
    healthTimeoutMs: raw.HEALTH_TIMEOUT_MS,
    healthIntervalMs: raw.HEALTH_INTERVAL_MS,
    logLevel: raw.LOG_LEVEL,
    mediaMaxBytes: raw.MEDIA_MAX_BYTES,
    instanceId: raw.INSTANCE_ID ?? stableId(raw.PORT),
    trustProxy: parseTrustProxy(raw.TRUST_PROXY),
    migrateOnStart: raw.MIGRATE_ON_START,
    shutdownTimeoutMs: raw.SHUTDOWN_TIMEOUT_MS,
    mediaCacheTtlSeconds: raw.MEDIA_CACHE_TTL_SECONDS,
    replicationMaxLagSeconds: raw.REPLICATION_MAX_LAG_SECONDS,
    databaseDrainMs: raw.DATABASE_DRAIN_MS,
    autoReadOnly: raw.AUTO_READ_ONLY,
    autoReadOnlyFailures: raw.AUTO_READ_ONLY_FAILURES,
    autoReadOnlyRecoveries: raw.AUTO_READ_ONLY_RECOVERIES,
    mediaContinuousBackup: raw.MEDIA_CONTINUOUS_BACKUP,
    mediaSyncConcurrency: raw.MEDIA_SYNC_CONCURRENCY,
    mediaSyncInlineMax: raw.MEDIA_SYNC_INLINE_MAX,
    mediaGcGraceMs: raw.MEDIA_GC_GRACE_SECONDS * 1000,
    mediaGcIntervalMs: raw.MEDIA_GC_INTERVAL_MS,
    mediaS3TimeoutMs: raw.MEDIA_S3_TIMEOUT_MS,
    mediaS3PoolSize: raw.MEDIA_S3_POOL_SIZE,
    mediaIdleBodyTimeoutMs: raw.MEDIA_IDLE_BODY_TIMEOUT_MS,
    mediaMinUploadBytesPerSec: raw.MEDIA_MIN_UPLOAD_BYTES_PER_SEC,
    mediaMinUploadRateWindowMs: raw.MEDIA_MIN_UPLOAD_RATE_WINDOW_MS,
    mediaSpoolMaxConcurrent: raw.MEDIA_SPOOL_MAX_CONCURRENT,
    mediaSpoolMaxBytes: raw.MEDIA_SPOOL_MAX_BYTES,
    mediaContentCacheBytes: raw.MEDIA_CONTENT_CACHE_BYTES,
    drStateFile: resolve(raw.DR_STATE_FILE ?? join('.sav3', 'dr-state.json')),
    drStateLeaseMs: raw.DR_STATE_LEASE_MS,
    metricsPort: raw.METRICS_PORT,
    adminAllowList: adminAllowList(raw.ADMIN_ALLOWED_CIDRS),
    notifyWebhookUrls:
      raw.NOTIFY_WEBHOOK_URLS?.split(',')
        .map((u) => u.trim())
        .filter((u) => u.length > 0) ?? [],
    alertmanagerWebhookToken: raw.ALERTMANAGER_WEBHOOK_TOKEN,
    backup: {
      stanza: raw.PGBACKREST_STANZA,
      configPath: raw.PGBACKREST_CONFIG,
      bin: raw.PGBACKREST_BIN,
      osUser: raw.PGBACKREST_OS_USER,
      pgBin: raw.PG_BIN,
      timeoutMs: raw.PGBACKREST_TIMEOUT_MS,
      infoCacheMs: raw.PGBACKREST_INFO_CACHE_MS,
      statusIntervalMs: raw.BACKUP_STATUS_INTERVAL_MS,
      archiveStallMs: raw.WAL_ARCHIVE_STALL_MS,
      maxAgeSeconds: raw.BACKUP_MAX_AGE,
      validationMaxAgeSeconds: raw.BACKUP_VALIDATION_MAX_AGE,
      runningMaxSeconds: raw.BACKUP_RUNNING_MAX,
      validateIntervalSeconds: raw.BACKUP_VALIDATE_INTERVAL,
      scratchDir: raw.BACKUP_SCRATCH_DIR ?? join(tmpdir(), 'sav3-validate'),
      workerPort: raw.WORKER_PORT,
      // INSTANCE_ID when set (then the same name as the API's, if both are given it); otherwise the
      // worker's own stable name (host and its port), distinct from the API's on the same host.
      workerInstanceId: raw.INSTANCE_ID ?? stableId(raw.WORKER_PORT),
      jobPollMs: raw.WORKER_POLL_MS,
    },
  };
}

/**
 * An instance's name, stable across restarts (host and port): a copy of the DR state names the
 * instances that were live, and recovering a state lost from Redis waits for them by these names.
 * Port 0 (tests) has no stable name: host and pid.
 */
function stableId(port: number): string {
  return port !== 0 ? `${hostname()}:${port}` : `${hostname()}-${process.pid}`;
}

// --- Edge: the internal metrics listener and the network allow-list of /admin ---------------

/**
 * METRICS_PORT: when set, /metrics is served only on this second listener (same HOST), which the
 * load balancer does not route to, and no longer on PORT.
 * ADMIN_ALLOWED_CIDRS: comma-separated addresses or CIDR ranges (IPv4 or IPv6) whose clients may
 * reach /admin at all; unset or empty means loopback only. Behind a proxy the client address is
 * the one TRUST_PROXY makes Express believe.
 */
function edgeVariables() {
  return {
    METRICS_PORT: int(1, 65535).optional(),
    ADMIN_ALLOWED_CIDRS: z
      .string()
      .refine((v) => parseCidrs(v) !== undefined, { error: 'must be comma-separated IP addresses or CIDR ranges such as 10.1.2.0/24' })
      .optional(),
  };
}

export interface AdminAllowList {
  /** The configured ranges as given, for logs and docs ("loopback" when none were). */
  ranges: string[];
  allows(address: string | undefined): boolean;
}

const LOOPBACK = ['127.0.0.0/8', '::1/128'];

function parseCidrs(value: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' }[] | undefined {
  const entries = value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
  const parsed = [];
  for (const entry of entries) {
    const [address = '', prefixText, extra] = entry.split('/');
    const version = isIP(address);
    if (version === 0 || extra !== undefined) return undefined;
    const max = version === 4 ? 32 : 128;
    if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (prefix > max) return undefined;
    parsed.push({ address, prefix, family: version === 4 ? ('ipv4' as const) : ('ipv6' as const) });
  }
  return parsed;
}

export function adminAllowList(value: string | undefined): AdminAllowList {
  const configured = value === undefined ? [] : (parseCidrs(value) ?? []);
  const ranges = configured.length > 0 ? configured.map((c) => `${c.address}/${c.prefix}`) : LOOPBACK;
  const list = new BlockList();
  for (const range of ranges) {
    const [address, prefix] = range.split('/');
    list.addSubnet(address!, Number(prefix), isIP(address!) === 4 ? 'ipv4' : 'ipv6');
  }
  return {
    ranges: configured.length > 0 ? ranges : ['loopback'],
    allows(address) {
      if (!address) return false;
      // An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d.
      const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
      const version = isIP(plain);
      if (version === 0) return false;
      return list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
    },
  };
}
