import pg from 'pg';
import { migrate } from '../../src/services/database/migrator.ts';
import { MIGRATIONS_DIR } from '../../src/paths.ts';
import { startPgCluster, type PgCluster, type PgClusterOptions } from '../../support/pg-cluster.ts';
import { createPgBackRestRepo, type PgBackRestRepo } from '../../support/pgbackrest-repo.ts';
import { startOwnRedis, type OwnRedis } from '../../support/redis-server.ts';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, ownDatabase, startInstance, uniquePrefix, type TestInstance } from './instance.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

// The set-ups integration files share: a database (a real primary + replica, or a scratch database
// of the file's own), one or two S3 servers, and service instances on them with one Redis key
// prefix. `start(env)` starts an instance with the world's environment plus `env`; `destroy()`
// stops every instance it started, then the S3 servers and the database (safe after a failed set-up).
// Two cluster variants add what some files need: a pgBackRest repository (startBackupWorld), or a
// Redis of the world's own with a proxy to cut instances off from it (startPartitionWorld).

export interface WorldOptions {
  /** The primary media bucket's name (one S3 server of the world's own). */
  bucket: string;
  /** A second S3 server as the backup media backend, under this bucket name. */
  backupBucket?: string;
  /** More environment for every instance the world starts. */
  env?: Record<string, string>;
  /** The Redis key prefix every instance shares (default: a fresh one). */
  prefix?: string;
}

interface World {
  s3: S3ServerHandle;
  s3Backup?: S3ServerHandle;
  /** The environment every instance gets: media backends, database URLs, `options.env`. */
  env: Record<string, string>;
  prefix: string;
  start(env?: Record<string, string>): Promise<TestInstance>;
  destroy(): Promise<void>;
}

export interface ClusterWorldOptions extends WorldOptions {
  /** Give instances the streaming replica as DATABASE_REPLICA_URL (default true). */
  replica?: boolean;
  cluster?: PgClusterOptions;
  /** Runs on the started cluster before the migrations (e.g. a pgBackRest repository). */
  prepare?: (cluster: PgCluster) => Promise<void>;
}

export interface ClusterWorld extends World {
  cluster: PgCluster;
}

export interface BackupWorld extends ClusterWorld {
  /** The primary archives here (a real archive_command); instances get `repo.env` only when a test passes it. */
  repo: PgBackRestRepo;
}

export interface PartitionWorld extends ClusterWorld {
  /** A Redis of the world's own, to stop and restart. */
  redis: OwnRedis;
  /** In front of `redis`: `proxy.setMode('refuse')` cuts off the instances started by `startProxied`. */
  proxy: TcpProxy;
  /** An instance on `redis` directly. */
  startDirect(env?: Record<string, string>): Promise<TestInstance>;
  /** An instance on `redis` through `proxy`. */
  startProxied(env?: Record<string, string>): Promise<TestInstance>;
}

export interface MediaWorld extends World {
  db: { url: string; drop(): Promise<void> };
  /** A connected client on the world's database (media rows below the API). */
  sql: pg.Client;
}

/** S3 servers and instances on a database; `cleanups` release the database after them. */
async function world(options: WorldOptions, databaseEnv: Record<string, string>, cleanups: (() => Promise<void>)[]): Promise<World> {
  const instances: TestInstance[] = [];
  const servers: S3ServerHandle[] = [];
  const started = (s: S3ServerHandle) => (servers.push(s), s);
  const destroy = async () => {
    for (const instance of instances) await instance.stop();
    await Promise.all(servers.map((s) => s.destroy()));
    for (const cleanup of cleanups) await cleanup();
  };
  try {
    const s3 = started(await startS3Server({ bucket: options.bucket }));
    const s3Backup = options.backupBucket ? started(await startS3Server({ bucket: options.backupBucket })) : undefined;
    const env: Record<string, string> = {
      ...mediaEnv('PRIMARY', s3),
      ...(s3Backup ? mediaEnv('BACKUP', s3Backup) : {}),
      ...databaseEnv,
      ...options.env,
    };
    const prefix = options.prefix ?? uniquePrefix();
    return {
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

/** A real primary + streaming replica, migrated, with S3 servers and instances on it. */
export async function startClusterWorld(options: ClusterWorldOptions): Promise<ClusterWorld> {
  const cluster = await startPgCluster(options.cluster);
  try {
    await options.prepare?.(cluster);
    await migrate(cluster.primary.url(), MIGRATIONS_DIR);
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  const databaseEnv = {
    DATABASE_URL: cluster.primary.url(),
    ...(options.replica === false ? {} : { DATABASE_REPLICA_URL: cluster.replica.url() }),
  };
  return { ...(await world(options, databaseEnv, [() => cluster.destroy()])), cluster };
}

/**
 * A cluster world whose primary has a pgBackRest repository of its own (instances get no replica
 * URL); `destroy()` removes the repository after the cluster.
 */
export async function startBackupWorld(options: WorldOptions & { cluster?: PgClusterOptions }): Promise<BackupWorld> {
  let repo: PgBackRestRepo | undefined;
  const prepare = async (cluster: PgCluster) => {
    repo = await createPgBackRestRepo(cluster.primary, cluster.dir);
  };
  let clusterWorld: ClusterWorld;
  try {
    clusterWorld = await startClusterWorld({ ...options, replica: false, prepare });
  } catch (err) {
    repo?.destroy();
    throw err;
  }
  const created = repo!;
  return {
    ...clusterWorld,
    repo: created,
    async destroy() {
      await clusterWorld.destroy();
      created.destroy();
    },
  };
}

/**
 * A cluster world whose instances share a Redis of the world's own, some of them through a proxy
 * that can cut them off (a partition); `destroy()` stops the proxy and Redis after the rest.
 */
export async function startPartitionWorld(options: WorldOptions): Promise<PartitionWorld> {
  const clusterWorld = await startClusterWorld(options);
  let redis: OwnRedis | undefined;
  let proxy: TcpProxy;
  try {
    redis = await startOwnRedis();
    proxy = await startTcpProxy(redis.port);
  } catch (err) {
    await redis?.stop();
    await clusterWorld.destroy();
    throw err;
  }
  const own = redis;
  return {
    ...clusterWorld,
    redis: own,
    proxy,
    startDirect: (env = {}) => clusterWorld.start({ ...env, REDIS_URL: own.url }),
    startProxied: (env = {}) => clusterWorld.start({ ...env, REDIS_URL: `redis://127.0.0.1:${proxy.port}` }),
    async destroy() {
      await clusterWorld.destroy();
      await proxy.close();
      await own.stop();
    },
  };
}

/** A scratch database of the file's own (media rows no other file sees), with S3 servers and instances on it. */
export async function startMediaWorld(options: WorldOptions): Promise<MediaWorld> {
  const db = await ownDatabase();
  const sql = new pg.Client({ connectionString: db.url });
  try {
    await sql.connect();
  } catch (err) {
    await db.drop();
    throw err;
  }
  const cleanups = [() => sql.end(), () => db.drop()];
  return { ...(await world(options, { DATABASE_URL: db.url }, cleanups)), db, sql };
}
