import request from 'supertest';
import { createRestorePoint, writeGeneratedRestorePoint } from '../../src/services/backup/restore-point.ts';
import { sql } from '../support/dr-scripts.ts';
import { OPERATOR_TOKEN, type TestInstance } from '../support/instance.ts';
import { startClusterWorld, type ClusterWorld } from '../support/world.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

/** Recovery to a name stops at its first point: a name must name one point only. */
describe('restore point names are unique (recorded in restore_points)', () => {
  let world: ClusterWorld;
  let api: TestInstance;
  let primary: string;

  beforeAll(async () => {
    world = await startClusterWorld({ bucket: 'rp-names', replica: false });
    api = await world.start();
    primary = world.cluster.primary.url();
  }, 90_000);
  afterAll(async () => {
    await world?.destroy();
  });

  const post = (name: string) => request(api.url).post('/admin/database/restore-point').set(auth).send({ name });

  it('a name used before answers 409 restore_point_exists, and no second point is written', async () => {
    const first = await post('dup1');
    expect(first.status).toBe(201);
    const second = await post('dup1');
    expect(second.status).toBe(409);
    expect(second.body.error).toMatchObject({ code: 'restore_point_exists', message: expect.stringContaining('dup1') });
    const rows = await sql<{ name: string; lsn: string; created_by: string }>(
      primary,
      "SELECT name, lsn, created_by FROM restore_points WHERE name = 'dup1'",
    );
    expect(rows).toEqual([{ name: 'dup1', lsn: first.body.restorePoint.lsn, created_by: expect.any(String) }]);
  });

  it('concurrent requests for one name: exactly one 201, the others 409', async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, () => post('race-1')));
    expect(answers.map((a) => a.status).sort()).toEqual([201, 409, 409, 409, 409, 409]);
    expect(await sql(primary, "SELECT 1 FROM restore_points WHERE name = 'race-1'")).toHaveLength(1);
  });

  it('automatic points (before migrate, promote, switch) never reuse a name, even in the same millisecond', async () => {
    const at = new Date('2026-11-26T08:15:00.123Z');
    const write = (name: string) => createRestorePoint(primary, name, 2000, 'system:test');
    const a = await writeGeneratedRestorePoint(write, 'before-switch-to-replica', at);
    const b = await writeGeneratedRestorePoint(write, 'before-switch-to-replica', at);
    expect(a.name).toBe('before-switch-to-replica-20261126T081500123Z');
    expect(b.name).toMatch(/^before-switch-to-replica-20261126T081500123Z-[0-9a-f]{6}$/);
    expect(await sql(primary, "SELECT 1 FROM restore_points WHERE name LIKE 'before-switch-to-replica-20261126T081500123Z%'")).toHaveLength(
      2,
    );
  });
});
