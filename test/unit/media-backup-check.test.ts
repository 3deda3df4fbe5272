import { BackupBucketMediaCheck } from '../../src/services/backup/media-backup-check.ts';
import { versionObjectName } from '../../src/services/media/media-repository.ts';
import type { StoredVersion } from '../../src/services/media/media-version-repository.ts';
import { MemoryObjectStore, MemoryVersionRepository } from '../support/fakes.ts';

const version = (i: number, copied: boolean): StoredVersion => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  key: `k${String(i).padStart(3, '0')}`,
  size: 10 + i,
  sha256: 'x'.repeat(64),
  contentType: 'application/octet-stream',
  backends: copied ? ['primary', 'backup'] : ['primary'],
  replaced: false,
});

function world(total: number, copied: number) {
  const versions = new MemoryVersionRepository();
  const bucket = new MemoryObjectStore('backup');
  for (let i = 0; i < total; i += 1) {
    const v = version(i, i < copied);
    versions.commit(v.key, v);
    if (i < copied) bucket.objects.set(versionObjectName(v.id), { body: Buffer.alloc(v.size), contentType: v.contentType });
  }
  return { versions, bucket };
}

describe('media_backup_sample (validation): the backup bucket checked against the restored metadata', () => {
  it('no sampled version had been copied yet: skipped with the reason, never a pass', async () => {
    const { versions, bucket } = world(40, 0);
    const check = await new BackupBucketMediaCheck(bucket).checkVersions(versions);
    expect(check).toMatchObject({ name: 'media_backup_sample', skipped: true, data: { checked: 0, notYetOnBackup: 40 } });
    expect(check.detail).toMatch(/^skipped: no current media version was on the backup backend .*40 not yet copied/);
  });

  it('samples the versions already copied (the outbox recorded them on the backup) even when most are not', async () => {
    const { versions, bucket } = world(40, 4);
    const check = await new BackupBucketMediaCheck(bucket, 10).checkVersions(versions);
    expect(check.skipped).toBeUndefined();
    expect(check).toMatchObject({ ok: true, data: { checked: 4, notYetOnBackup: 10, problems: [] } });
  });

  it('a copied version missing from the bucket fails the check', async () => {
    const { versions, bucket } = world(5, 5);
    bucket.objects.delete(versionObjectName(version(2, true).id));
    const check = await new BackupBucketMediaCheck(bucket).checkVersions(versions);
    expect(check).toMatchObject({ ok: false, data: { checked: 5 } });
    expect(check.detail).toContain('k002');
  });
});
