import { createPrisma } from '../../adapters/database-clients.ts';
import { versionObjectName } from '../media/media-repository.ts';
import { PrismaMediaVersionRepository } from '../media/media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';
import type { MediaBackupCheck, ValidationCheck } from './backup-validator.ts';

/**
 * Samples current media versions from the restored database (through the media layer's own
 * version repository, so it follows the media schema) and looks each one the metadata says is on
 * the backup backend up in the backup bucket: present, at its recorded size.
 */
export class BackupBucketMediaCheck implements MediaBackupCheck {
  constructor(
    private readonly store: ObjectStore,
    private readonly sampleSize = 50,
  ) {}

  async check(restoredDatabaseUrl: string): Promise<Omit<ValidationCheck, 'ms'>> {
    const prisma = createPrisma(restoredDatabaseUrl);
    try {
      const versions = new PrismaMediaVersionRepository(() => prisma);
      // A sample from a random point of the key space (wrapping to the start when it runs short).
      const start = Math.random().toString(36).slice(2, 4);
      let sample = await versions.current(start, this.sampleSize);
      if (sample.length < this.sampleSize)
        sample = [...sample, ...(await versions.current('', this.sampleSize - sample.length))].filter(
          (v, i, all) => all.findIndex((w) => w.id === v.id) === i,
        );
      const legacy = await versions.countLegacy();
      const onBackup = sample.filter((v) => v.backends.includes(this.store.backend));
      const problems: string[] = [];
      for (const version of onBackup) {
        const stat = await this.store.stat(versionObjectName(version.id)).catch((err: unknown) => err as Error);
        if (stat instanceof Error) problems.push(`${version.key}: ${stat.message}`);
        else if (!stat) problems.push(`${version.key}: version ${version.id} is not in the backup bucket`);
        else if (stat.size !== version.size) problems.push(`${version.key}: ${stat.size} bytes in the bucket, ${version.size} recorded`);
      }
      const notYet = sample.length - onBackup.length;
      return {
        name: 'media_backup_sample',
        ok: problems.length === 0,
        detail:
          problems.length === 0
            ? `${onBackup.length} sampled media versions are in the backup bucket ${this.store.bucket} at their recorded size${notYet ? `; ${notYet} more were not yet copied when the backup was taken` : ''}`
            : `${problems.length} of ${onBackup.length} sampled: ${problems.slice(0, 5).join('; ')}`,
        data: {
          sampled: sample.length,
          checked: onBackup.length,
          notYetOnBackup: notYet,
          legacyNotChecked: legacy,
          problems: problems.slice(0, 20),
        },
      };
    } finally {
      await prisma.$disconnect().catch(() => undefined);
    }
  }
}
