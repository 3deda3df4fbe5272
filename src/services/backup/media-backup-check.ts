import { createPrisma } from '../../adapters/database-clients.ts';
import { versionObjectName } from '../media/media-repository.ts';
import { PrismaMediaVersionRepository, type MediaVersionRepository } from '../media/media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';
import type { MediaBackupCheck, ValidationCheck } from './backup-validator.ts';

/**
 * Samples current media versions from the restored database (through the media layer's own
 * version repository, so it follows the media schema) and looks each one the metadata says is on
 * the backup backend up in the backup bucket: present, at its recorded size. The sample is drawn
 * from the versions the continuous backup had already copied (their backends list the backup): a
 * sample of versions not yet copied proves nothing. With none copied the check is skipped, saying
 * why, never passed.
 */
export class BackupBucketMediaCheck implements MediaBackupCheck {
  constructor(
    private readonly store: ObjectStore,
    private readonly sampleSize = 50,
  ) {}

  async check(restoredDatabaseUrl: string): Promise<Omit<ValidationCheck, 'ms'>> {
    const prisma = createPrisma(restoredDatabaseUrl);
    try {
      return await this.checkVersions(new PrismaMediaVersionRepository(() => prisma));
    } finally {
      await prisma.$disconnect().catch(() => undefined);
    }
  }

  async checkVersions(
    versions: Pick<MediaVersionRepository, 'currentOn' | 'currentMissingOn' | 'countLegacy'>,
  ): Promise<Omit<ValidationCheck, 'ms'>> {
    const backend = this.store.backend;
    // A sample from a random point of the key space (wrapping to the start when it runs short).
    const start = Math.random().toString(36).slice(2, 4);
    let onBackup = await versions.currentOn(backend, start, this.sampleSize);
    if (onBackup.length < this.sampleSize)
      onBackup = [...onBackup, ...(await versions.currentOn(backend, '', this.sampleSize - onBackup.length))].filter(
        (v, i, all) => all.findIndex((w) => w.id === v.id) === i,
      );
    // How many were not yet copied when the backup was taken (counted up to the sample size).
    const notYet = (await versions.currentMissingOn(backend, '', this.sampleSize)).length;
    const legacy = await versions.countLegacy();
    const data = {
      sampled: onBackup.length + notYet,
      checked: onBackup.length,
      notYetOnBackup: notYet,
      legacyNotChecked: legacy,
      problems: [] as string[],
    };
    if (onBackup.length === 0)
      return {
        name: 'media_backup_sample',
        ok: true,
        skipped: true as const,
        detail: `skipped: no current media version was on the backup backend when the backup was taken${notYet ? ` (${notYet}${notYet === this.sampleSize ? ' or more' : ''} not yet copied)` : ' (no media versions)'}: nothing in the backup bucket ${this.store.bucket} could be checked`,
        data,
      };
    const problems: string[] = [];
    for (const version of onBackup) {
      const stat = await this.store.stat(versionObjectName(version.id)).catch((err: unknown) => err as Error);
      if (stat instanceof Error) problems.push(`${version.key}: ${stat.message}`);
      else if (!stat) problems.push(`${version.key}: version ${version.id} is not in the backup bucket`);
      else if (stat.size !== version.size) problems.push(`${version.key}: ${stat.size} bytes in the bucket, ${version.size} recorded`);
    }
    return {
      name: 'media_backup_sample',
      ok: problems.length === 0,
      detail:
        problems.length === 0
          ? `${onBackup.length} sampled media versions are in the backup bucket ${this.store.bucket} at their recorded size${notYet ? `; ${notYet}${notYet === this.sampleSize ? ' or more' : ''} more were not yet copied when the backup was taken` : ''}`
          : `${problems.length} of ${onBackup.length} sampled: ${problems.slice(0, 5).join('; ')}`,
      data: { ...data, problems: problems.slice(0, 20) },
    };
  }
}
