import type { Config } from '../config/config.ts';
import type { MediaBackendName } from '../domain.ts';
import { MinioObjectStore } from './minio-object-store.ts';
import type { ObjectStore } from './object-store.ts';

/**
 * The S3 buckets media lives in: always the primary, the backup when configured; with the
 * configured request timeout and connection pool (MEDIA_S3_TIMEOUT_MS, MEDIA_S3_POOL_SIZE).
 * The API and the worker both build theirs here.
 */
export function createObjectStores(config: Config): Map<MediaBackendName, ObjectStore> {
  const stores = new Map<MediaBackendName, ObjectStore>();
  const storeOptions = { timeoutMs: config.mediaS3TimeoutMs, poolSize: config.mediaS3PoolSize };
  stores.set('primary', new MinioObjectStore(config.mediaPrimary, storeOptions));
  if (config.mediaBackup) stores.set('backup', new MinioObjectStore(config.mediaBackup, storeOptions));
  return stores;
}
