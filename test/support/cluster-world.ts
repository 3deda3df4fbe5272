import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster, type PgClusterOptions } from '../../support/pg-cluster.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, startInstance, uniquePrefix, type TestInstance } from './instance.ts';

export interface ClusterWorldOptions {
  /** The primary media bucket's name (one S3 server of the world's own). */
  bucket: string;
  /** A second S3 server as the backup media backend, under this bucket name. */
  backupBucket?: string;
  /** Give instances the streaming replica as DATABASE_REPLICA_URL (default true). */
  replica?: boolean;
  cluster?: PgClusterOptions;
  /** Runs on the started cluster before the migrations (e.g. a pgBackRest repository). */
  prepare?: (cluster: PgCluster) => Promise<void>;
  /** More environment for every instance the world starts. */
  env?: Record<string, string>;
  /** The Redis key prefix every instance shares (default: a fresh one). */
  prefix?: string;
}

/**
 * The set-up most integration files share: a real primary + streaming replica, migrated, one or
 * two S3 servers, and service instances started on them with one Redis key prefix. `start(env)`
 * starts an instance with the world's environment plus `env`; `destroy()` stops every instance it
 * started, then the S3 servers and the cluster (safe after a failed set-up).
 */
export interface ClusterWorld {
  cluster: PgCluster;
  s3: S3ServerHandle;
  s3Backup?: S3ServerHandle;
  /** The environment every instance gets: media backends, database URLs, `options.env`. */
  env: Record<string, string>;
  prefix: string;
  start(env?: Record<string, string>): Promise<TestInstance>;
  destroy(): Promise<void>;
}

export async function startClusterWorld(options: ClusterWorldOptions): Promise<ClusterWorld> {
  const instances: TestInstance[] = [];
  const servers: S3ServerHandle[] = [];
  let cluster: PgCluster | undefined;
  const destroy = async () => {
    for (const instance of instances) await instance.stop();
    await Promise.all(servers.map((s) => s.destroy()));
    await cluster?.destroy();
  };
  try {
    cluster = await startPgCluster(options.cluster);
    await options.prepare?.(cluster);
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
    const [s3, s3Backup] = await Promise.all([
      startS3Server({ bucket: options.bucket }).then((s) => (servers.push(s), s)),
      options.backupBucket ? startS3Server({ bucket: options.backupBucket }).then((s) => (servers.push(s), s)) : undefined,
    ]);
    const env: Record<string, string> = {
      ...mediaEnv('PRIMARY', s3),
      ...(s3Backup ? mediaEnv('BACKUP', s3Backup) : {}),
      DATABASE_URL: cluster.primary.url(),
      ...(options.replica === false ? {} : { DATABASE_REPLICA_URL: cluster.replica.url() }),
      ...options.env,
    };
    const prefix = options.prefix ?? uniquePrefix();
    return {
      cluster,
      s3,
      s3Backup,
      env,
      prefix,
      async start(extra = {}) {
        const instance = await startInstance({ ...env, ...extra }, prefix);
        instances.push(instance);
        return instance;
      },
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}
