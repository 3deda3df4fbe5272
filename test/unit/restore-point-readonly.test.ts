import { RestorePointExistsError, writeRestorePoint } from '../../src/services/backup/restore-point.ts';

/** A client whose every write is refused as read-only (a primary fenced with default_transaction_read_only). */
function readOnlyClient(used: string[]) {
  const points: string[] = [];
  return {
    points,
    query: async (text: string, values?: unknown[]) => {
      if (text.startsWith('INSERT')) throw Object.assign(new Error('cannot execute INSERT in a read-only transaction'), { code: '25006' });
      if (text.startsWith('SELECT 1 FROM restore_points')) return { rows: used.includes(values![0] as string) ? [{}] : [] };
      if (text.includes('pg_create_restore_point')) {
        points.push(values![0] as string);
        return { rows: [{ lsn: '0/16009410' }] };
      }
      return { rows: [] };
    },
  };
}

describe('a restore point on a primary fenced read-only', () => {
  it('refuses a used name (409) instead of writing a second point of it, which recovery by name would never reach', async () => {
    const client = readOnlyClient(['p1']);
    await expect(writeRestorePoint(client as never, 'p1', 'ops')).rejects.toBeInstanceOf(RestorePointExistsError);
    expect(client.points).toEqual([]);
  });

  it('writes a new name unrecorded (the fence lets WAL through, not the row)', async () => {
    const client = readOnlyClient(['p1']);
    expect(await writeRestorePoint(client as never, 'p2', 'ops')).toMatchObject({ name: 'p2', recorded: false });
    expect(client.points).toEqual(['p2']);
  });
});
