import type { BackupInfo, BackupRecovery } from './pgbackrest.ts';

/**
 * What stops recovery from a backup short of the end of the archive, from its `recovery` (wal-scan's
 * backupRecovery): `not_child` (the backup lies on a branch a point-in-time restore abandoned),
 * `own_wal_incomplete` (a hole in the WAL the backup itself needs: it cannot be made consistent),
 * `hole` (a hole after the backup: recovery works, and stops there), `other` (e.g. newer timelines
 * the followed one does not reach: recovery works). The first two make the backup unrecoverable
 * with this archive; the others do not.
 *
 * backupRecovery flags `notChild`; the rest it says in words only (`problem`): these are its
 * sentences (describeGap), pinned by test/unit/backup-recoverable.test.ts against the real functions.
 */
export type RecoveryBlock = 'not_child' | 'own_wal_incomplete' | 'hole' | 'other';

export function recoveryBlock(recovery: BackupRecovery | null | undefined): RecoveryBlock | null {
  if (!recovery || recovery.toEndOfArchive || !recovery.problem) return null;
  if (recovery.notChild || /is not a child of this server's history/.test(recovery.problem)) return 'not_child';
  if (/part of the backup's own WAL/.test(recovery.problem)) return 'own_wal_incomplete';
  if (/the archived WAL has a hole after/.test(recovery.problem)) return 'hole';
  return 'other';
}

/**
 * A backup recovery can start from with this archive: not failed, and not on an abandoned branch nor
 * missing its own WAL. Unknown (the archive was not read: `recovery` null or absent) counts as
 * recoverable: nothing says otherwise.
 */
export function recoverable(backup: Pick<BackupInfo, 'error' | 'recovery'>): boolean {
  if (backup.error) return false;
  const block = recoveryBlock(backup.recovery);
  return block !== 'not_child' && block !== 'own_wal_incomplete';
}

/** The hole a `hole` problem names: its first missing segment and the next archived one (null: none named). */
export function holeOf(recovery: BackupRecovery | null | undefined): { missing: string; nextArchived: string | null } | null {
  if (recoveryBlock(recovery) !== 'hole') return null;
  const m = /missing: ([0-9A-F]{24}); next archived: ([0-9A-F]{24}|null)/.exec(recovery!.problem!);
  return m ? { missing: m[1]!, nextArchived: m[2] === 'null' ? null : m[2]! } : null;
}
