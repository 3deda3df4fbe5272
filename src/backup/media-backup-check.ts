import pg from 'pg';
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
    const client = new pg.Client({ connectionString: restoredDatabaseUrl, statement_timeout: 30_000 });
    client.on('error', () => undefined);
    await client.connect();
    let rows: { key: string; size: string }[];
    try {
      rows = (await client.query<{ key: string; size: string }>('SELECT key, size::text AS size FROM media_objects ORDER BY random() LIMIT $1', [this.sampleSize])).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
    const problems: string[] = [];
    for (const row of rows) {
      const stat = await this.store.stat(row.key).catch((err: unknown) => err as Error);
      if (stat instanceof Error) problems.push(`${row.key}: ${stat.message}`);
      else if (!stat) problems.push(`${row.key}: not in the backup bucket`);
      else if (stat.size !== Number(row.size)) problems.push(`${row.key}: ${stat.size} bytes in the bucket, ${row.size} recorded`);
    }
    return {
      name: 'media_backup_sample',
      ok: problems.length === 0,
      detail: problems.length === 0 ? `${rows.length} sampled media objects are in the backup bucket ${this.store.bucket} with their recorded size` : `${problems.length} of ${rows.length} sampled: ${problems.slice(0, 5).join('; ')}`,
      data: { sampled: rows.length, problems: problems.slice(0, 20) },
    };
  }
}
