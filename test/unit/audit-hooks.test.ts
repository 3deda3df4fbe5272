import { AuditLog } from '../../src/services/audit/audit-log.ts';
import { MemoryAuditSink, MemoryAuditSpool } from '../support/fakes.ts';
import { captureLogger } from '../support/log-capture.ts';

describe('audit write hooks (incident timelines)', () => {
  const input = {
    actor: 'ops',
    role: 'operator',
    action: 'database.switch',
    result: 'success' as const,
    before: null,
    after: null,
    detail: null,
    requestId: null,
    durationMs: 42,
  };

  it('run after each write; when a hook or the sink fails the event stays spooled and the hook runs again on flush, until it succeeds', async () => {
    const sink = new MemoryAuditSink();
    const spool = new MemoryAuditSpool();
    const log = new AuditLog({ sink, spool, logger: captureLogger().logger, instanceId: 'i', flushIntervalMs: 1000 });
    const seen: string[] = [];
    let hookDown = true;
    log.onWritten(async (events) => {
      if (hookDown) throw new Error('timeline store down');
      seen.push(...events.map((e) => e.id));
    });
    const first = await log.record(input);
    expect(first.durationMs).toBe(42);
    expect(sink.rows.has(first.id)).toBe(true);
    expect(spool.items.map((e) => e.id)).toEqual([first.id]);
    sink.down = true;
    const second = await log.record(input);
    expect(await log.flush()).toBe(0);
    hookDown = false;
    sink.down = false;
    expect(await log.flush()).toBe(2);
    expect(seen).toEqual([first.id, second.id]);
    expect(await log.pending()).toBe(0);
    expect([...sink.rows.keys()].sort()).toEqual([first.id, second.id].sort());
  });
});
