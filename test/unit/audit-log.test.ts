import { AuditLog } from '../../src/services/audit/audit-log.ts';
import type { AuditEvent } from '../../src/services/audit/audit-event.ts';
import { drWorld } from '../support/dr-world.ts';

const input = (action: string) => ({
  actor: 'ops',
  role: 'operator',
  action,
  result: 'success' as const,
  before: null,
  after: null,
  detail: null,
  requestId: null,
});

describe('AuditLog', () => {
  it('writes an event to the sink with its id, time and instance', async () => {
    const w = drWorld({ now: () => Date.parse('2026-11-26T10:00:00Z') });
    const { audit } = w.instance('api-7');
    const event = await audit.record(input('read_only.set'));
    expect(w.sink.rows.get(event.id)).toEqual({
      ...input('read_only.set'),
      id: event.id,
      at: '2026-11-26T10:00:00.000Z',
      instanceId: 'api-7',
    });
    expect(await audit.pending()).toBe(0);
    expect((await audit.recent(10)).map((e) => e.id)).toEqual([event.id]);
  });

  it('with PostgreSQL down an event waits in the shared spool and is written by the next flush, once', async () => {
    const w = drWorld();
    const { audit } = w.instance();
    w.sink.down = true;
    const event = await audit.record(input('database.switch'));
    expect(w.sink.rows.size).toBe(0);
    expect(w.spool.items.map((e) => e.id)).toEqual([event.id]);
    expect(await audit.pending()).toBe(1);
    // Still down: nothing is lost, nothing written.
    expect(await audit.flush()).toBe(0);
    expect(w.spool.items).toHaveLength(1);
    w.sink.down = false;
    expect(await audit.flush()).toBe(1);
    expect([...w.sink.rows.keys()]).toEqual([event.id]);
    expect(await audit.pending()).toBe(0);
    expect(await audit.flush()).toBe(0);
  });

  it('while the database of the sink cannot take writes (a promotion recorded, the switch to come) events go to the spool without an insert, and are written once it can', async () => {
    const w = drWorld();
    const { logger } = w.instance();
    let closed = true;
    let inserts = 0;
    const sink = { write: (events: AuditEvent[]) => ((inserts += 1), w.sink.write(events)), recent: (n: number) => w.sink.recent(n) };
    const audit = new AuditLog({ sink, spool: w.spool, logger, instanceId: 'api-1', flushIntervalMs: 60_000, sinkClosed: () => closed });
    const event = await audit.record(input('database.promote'));
    expect(inserts).toBe(0);
    expect(w.spool.items.map((e) => e.id)).toEqual([event.id]);
    expect(await audit.flush()).toBe(0);
    expect(inserts).toBe(0);
    closed = false;
    expect(await audit.flush()).toBe(1);
    expect([...w.sink.rows.keys()]).toEqual([event.id]);
    expect(await audit.pending()).toBe(0);
  });

  it('with PostgreSQL and Redis down events stay in the process, in order, until either returns', async () => {
    const w = drWorld();
    const { audit } = w.instance();
    w.sink.down = true;
    w.spool.down = true;
    const ids = [(await audit.record(input('a'))).id, (await audit.record(input('b'))).id];
    // pending() cannot see the spool, but counts this process's events.
    expect(await audit.pending()).toBe(2);
    // Redis returns first: the flush moves them to the spool, PostgreSQL still down.
    w.spool.down = false;
    expect(await audit.flush()).toBe(0);
    expect(w.spool.items.map((e) => e.id)).toEqual(ids);
    expect(await audit.pending()).toBe(2);
    w.sink.down = false;
    expect(await audit.flush()).toBe(2);
    expect([...w.sink.rows.keys()]).toEqual(ids);
    expect(await audit.pending()).toBe(0);
  });

  it('a flush drains a spool larger than one batch, and events another instance spooled', async () => {
    const w = drWorld();
    const a = w.instance('api-1');
    const b = w.instance('api-2');
    w.sink.down = true;
    for (let i = 0; i < 130; i += 1) await (i % 2 ? a : b).audit.record(input(`x${i}`));
    w.sink.down = false;
    expect(await a.audit.flush()).toBe(130);
    expect(w.sink.rows.size).toBe(130);
    expect(new Set([...w.sink.rows.values()].map((e) => e.instanceId))).toEqual(new Set(['api-1', 'api-2']));
  });
});
