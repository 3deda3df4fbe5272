// `npm run stack`: a complete local stack without Docker. A PostgreSQL primary and streaming
// replica of its own (or DATABASE_URL if given), two S3 servers (primary and backup), Redis from
// REDIS_URL, migrations applied, then the API on PORT (and, with pgBackRest installed, its WAL
// archive and a worker on WORKER_PORT). Prints curl commands to try; Ctrl-C stops
// everything.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig } from '../src/config/config.ts';
import { migrate } from '../src/services/database/migrator.ts';
import { createLogger } from '../src/logger.ts';
import { createService } from '../src/service.ts';
import { MIGRATIONS_DIR } from '../src/paths.ts';
import { createWorker } from '../src/worker-service.ts';
import { stackPrefixes } from './stack-wiring.ts';
import { startPgCluster } from '../support/pg-cluster.ts';
import { createPgBackRestRepo } from '../support/pgbackrest-repo.ts';
import { mediaEnv, startS3Server } from '../support/s3-server.ts';

const ROOT = join(__dirname, '..');

function hasPgBackRest(): boolean {
  try {
    execFileSync('pgbackrest', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = target.pathname.slice(1);
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  if (rowCount === 0) await client.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
  await client.end();
}

async function main(): Promise<void> {
  const env = process.env;
  const dataDir = join(ROOT, '.stack');
  mkdirSync(dataDir, { recursive: true });
  const cluster = env.DATABASE_URL ? undefined : await startPgCluster();
  // Backups: the stack's own primary archives its WAL to a pgBackRest repository, and a worker
  // runs backup and validation jobs (when pgBackRest is installed).
  const repo = cluster && hasPgBackRest() ? await createPgBackRestRepo(cluster.primary, cluster.dir) : undefined;
  const databaseUrl = env.DATABASE_URL ?? cluster!.primary.url('sav3');
  const replicaUrl = env.DATABASE_URL ? env.DATABASE_REPLICA_URL : cluster!.replica.url('sav3');
  await ensureDatabase(databaseUrl);
  const applied = await migrate(databaseUrl, MIGRATIONS_DIR);
  console.log(`database: ${applied.applied.length} migration(s) applied`);

  const primary = await startS3Server({
    bucket: 'sav3-media',
    port: Number(env.STACK_S3_PRIMARY_PORT ?? 9000),
    directory: join(dataDir, 's3-primary'),
  });
  const backup = await startS3Server({
    bucket: 'sav3-media-backup',
    port: Number(env.STACK_S3_BACKUP_PORT ?? 9001),
    directory: join(dataDir, 's3-backup'),
  });

  // Fresh random tokens each run: the code carries no default credential.
  const operator = randomBytes(24).toString('base64url');
  const viewer = randomBytes(24).toString('base64url');
  const config = loadConfig({
    ...env,
    DATABASE_URL: databaseUrl,
    DATABASE_REPLICA_URL: replicaUrl,
    ...mediaEnv('PRIMARY', primary),
    ...mediaEnv('BACKUP', backup),
    ADMIN_TOKENS: env.ADMIN_TOKENS ?? `stack-operator:operator:${operator},stack-viewer:viewer:${viewer}`,
    // The worker (below) claims jobs under an id of its own, never the API instance's.
    INSTANCE_ID: env.INSTANCE_ID ?? 'stack-1',
    // A stack with its own new cluster starts from a clean DR state of its own: a state file of
    // this run and (below) a Redis key prefix of this run, never what an earlier stack or drill left.
    DR_STATE_FILE: env.DR_STATE_FILE ?? (cluster ? join(mkdtempSync(join(tmpdir(), 'sav3-stack-')), 'dr-state.json') : undefined),
    ...(repo ? { ...repo.env, BACKUP_SCRATCH_DIR: join(cluster!.dir, 'validate') } : {}),
  });
  const prefixes = stackPrefixes(!!cluster);
  const service = await createService(config, createLogger(config.logLevel), prefixes.service);
  const address = await service.listen();
  const worker = repo
    ? createWorker(
        { ...config, backup: { ...config.backup, workerInstanceId: 'stack-worker' } },
        createLogger(config.logLevel),
        prefixes.worker,
      )
    : undefined;
  const workerAddress = await worker?.listen();
  const base = `http://127.0.0.1:${address.port}`;

  console.log(`
SAV3 API stack is up.
  API            ${base}
  PostgreSQL     ${databaseUrl.replace(/\/\/[^@]*@/, '//')}${replicaUrl ? `\n  replica        ${replicaUrl.replace(/\/\/[^@]*@/, '//')}` : ''}${cluster ? `\n  (kill the primary: runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D ${cluster.primary.dataDir} -m immediate stop)` : ''}
  Redis          ${config.redisUrl}
  S3 primary     ${primary.endpoint} (bucket ${primary.bucket})
  S3 backup      ${backup.endpoint} (bucket ${backup.bucket})
  worker         ${workerAddress ? `http://127.0.0.1:${workerAddress.port} (health, metrics; pgBackRest stanza ${repo!.stanza}, config ${repo!.configPath})` : 'not started (pgBackRest is not installed, or DATABASE_URL was given)'}
${env.ADMIN_TOKENS ? '' : `  operator token ${operator}\n  viewer token   ${viewer}\n`}
Try:
  export SAV3_API_URL=${base}${env.ADMIN_TOKENS ? '' : ` SAV3_ADMIN_TOKEN=${operator}`}
  curl -s $SAV3_API_URL/health | jq
  curl -s $SAV3_API_URL/health/database | jq
  curl -s -H "Authorization: Bearer $SAV3_ADMIN_TOKEN" $SAV3_API_URL/health/media | jq
  curl -s -X PUT -H 'Content-Type: text/plain' --data-binary 'hello' $SAV3_API_URL/media/demo/hello.txt | jq
  curl -s $SAV3_API_URL/media/demo/hello.txt
  curl -s "$SAV3_API_URL/media?prefix=demo/&limit=10" | jq
  curl -s $SAV3_API_URL/metrics | grep ^sav3_
  scripts/dr/dr-state.sh
  scripts/dr/enable-readonly-mode.sh --reason "drill"
  scripts/dr/promote-replica.sh --dry-run
  scripts/dr/verify-database.sh
  scripts/dr/switch-media-backend.sh --to s3-backup --dry-run
  scripts/dr/verify-media-access.sh
  scripts/dr/backup-database.sh --type full
  scripts/dr/verify-backups.sh
  scripts/dr/validate-daily-backups.sh
  curl -s -H "Authorization: Bearer $SAV3_ADMIN_TOKEN" -X POST -H 'Content-Type: application/json' -d '{"name":"before-demo"}' $SAV3_API_URL/admin/database/restore-point | jq

Ctrl-C stops everything.`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping…');
    await service.stop();
    await worker?.stop();
    await Promise.all([primary.stop(), backup.stop()]);
    await cluster?.destroy();
    repo?.destroy();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  console.error(`stack failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
