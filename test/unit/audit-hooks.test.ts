import type { AuditEvent, AuditSink, AuditSpool } from '../../src/audit/audit-event.ts';
import { AuditLog } from '../../src/audit/audit-log.ts';
import { captureLogger } from '../support/log-capture.ts';

class MemorySink implements AuditSink {
  rows = new Map<string, AuditEvent>();
  down = false;
  async write(events: AuditEvent[]) {
    if (this.down) throw new Error('ECONNREFUSED');
    for (const e of events) this.rows.set(e.id, e);
  }
  async recent() {
    return [...this.rows.values()];
  }
}
class MemorySpool implements AuditSpool {
  items: AuditEvent[] = [];
  async push(e: AuditEvent) {
    this.items.push(e);
  }
  async drain(max: number, fn: (events: AuditEvent[]) => Promise<void>) {
    const batch = this.items.slice(0, max);
    if (batch.length === 0) return 0;
    await fn(batch);
    this.items.splice(0, batch.length);
    return batch.length;
  }
  async size() {
    return this.items.length;
  }
}

describe('audit write hooks (incident timelines)', () => {
  const input = { actor: 'ops', role: 'operator', action: 'database.switch', result: 'success' as const, before: null, after: null, detail: null, requestId: null, durationMs: 42 };

  it('run after each write; when a hook or the sink fails the event stays spooled and the hook runs again on flush, until it succeeds', async () => {
    const sink = new MemorySink();
    const spool = new MemorySpool();
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
