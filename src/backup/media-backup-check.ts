import pg from 'pg';
import { objectName } from '../media/media-repository.ts';
import type { ObjectStore } from '../media/object-store.ts';
import type { MediaBackupCheck, ValidationCheck } from './backup-validator.ts';

/**
 * Samples media metadata rows from the restored database and looks each up in the backup bucket:
 * the object must be there with the recorded size. (The metadata query is the only place that
 * knows the media table's layout.)
 */
export class BackupBucketMediaCheck implements MediaBackupCheck {
  constructor(
    private readonly store: ObjectStore,
    private readonly sampleSize = 50,
  ) {}

  async check(restoredDatabaseUrl: string): Promise<Omit<ValidationCheck, 'ms'>> {
    const client = new pg.Client({ connectionString: restoredDatabaseUrl, query_timeout: 30_000 });
    client.on('error', () => undefined);
    await client.connect();
    type Row = { key: string; version: string | null; size: string; recorded_on_backup: boolean };
    let rows: Row[];
    try {
      // Content lives under its version's name (objects of the old layout: under the key); a version
      // the outbox has not copied yet is not expected on the backup, and is counted apart.
      rows = (
        await client.query<Row>(
          `SELECT o.key, o.version::text AS version, o.size::text AS size, coalesce('backup' = ANY(v.backends), false) AS recorded_on_backup
             FROM media_objects o LEFT JOIN media_versions v ON v.id = o.version ORDER BY random() LIMIT $1`,
          [this.sampleSize],
        )
      ).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
    const problems: string[] = [];
    let pendingCopy = 0;
    for (const row of rows) {
      const stat = await this.store.stat(objectName(row)).catch((err: unknown) => err as Error);
      if (stat instanceof Error) problems.push(`${row.key}: ${stat.message}`);
      else if (!stat && row.version && !row.recorded_on_backup) pendingCopy += 1;
      else if (!stat) problems.push(`${row.key}: not in the backup bucket`);
      else if (stat.size !== Number(row.size)) problems.push(`${row.key}: ${stat.size} bytes in the bucket, ${row.size} recorded`);
    }
    return {
      name: 'media_backup_sample',
      ok: problems.length === 0,
      detail: problems.length === 0 ? `${rows.length - pendingCopy} of ${rows.length} sampled media objects are in the backup bucket ${this.store.bucket} with their recorded size${pendingCopy > 0 ? `; ${pendingCopy} not copied yet (continuous-backup outbox)` : ''}` : `${problems.length} of ${rows.length} sampled: ${problems.slice(0, 5).join('; ')}`,
      data: { sampled: rows.length, pendingCopy, problems: problems.slice(0, 20) },
    };
  }
}
