import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PermanentReportError, RestoreJournal, RestoreReporter } from '../../src/services/backup/restore-reporter.ts';
import { reportEventId, reportProblem, type RestoreReport } from '../../src/services/backup/restore-report.ts';

const ID = '0ffce991-87b6-426b-a7b1-64aec135f980';
const step = (name: 'read-only on' | 'stop PostgreSQL' | 'pgbackrest restore', ms: number) => ({
  event: 'step' as const,
  step: name,
  at: new Date().toISOString(),
  durationMs: ms,
  result: 'success' as const,
});

describe('RestoreReporter: journal first, then the API, in order', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sav3-journal-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('an API that fails keeps reports in the journal and in order; they go, marked late, when it answers', async () => {
    let up = false;
    const taken: RestoreReport[] = [];
    const said: string[] = [];
    const journal = RestoreJournal.open(dir, ID);
    const reporter = new RestoreReporter({
      restoreId: ID,
      journal,
      say: (l) => said.push(l),
      transport: async (r) => {
        if (!up) throw new Error('fetch failed (ECONNREFUSED)');
        taken.push(r);
      },
    });
    reporter.report({
      event: 'started',
      at: new Date().toISOString(),
      result: 'success',
      plan: { backup: '20260101-000000F', target: { type: 'end_of_archive' } },
    });
    reporter.report(step('read-only on', 10));
    expect(await reporter.flush(0)).toBe(2);
    expect(journal.pending().map((r) => r.seq)).toEqual([0, 1]);
    expect(said.filter((l) => l.includes('the restore goes on and records locally'))).toHaveLength(1);
    up = true;
    reporter.report(step('stop PostgreSQL', 20));
    expect(await reporter.flush(1000, 10)).toBe(0);
    expect(taken.map((r) => [r.seq, r.late === true])).toEqual([
      [0, true],
      [1, true],
      [2, true],
    ]);
    expect(journal.pending()).toEqual([]);
    // Once the API answers again, new reports are not late.
    reporter.report(step('pgbackrest restore', 30));
    await reporter.flush(1000, 10);
    expect(taken.at(-1)).toMatchObject({ seq: 3 });
    expect(taken.at(-1)!.late).toBeUndefined();
  });

  it('a report the API refuses (400) is not retried forever; the others still go', async () => {
    const taken: number[] = [];
    const reporter = new RestoreReporter({
      restoreId: ID,
      journal: RestoreJournal.open(dir, ID),
      say: () => undefined,
      transport: async (r) => {
        if (r.seq === 0) throw new PermanentReportError('HTTP 400');
        taken.push(r.seq);
      },
    });
    reporter.report(step('read-only on', 1));
    reporter.report(step('stop PostgreSQL', 2));
    expect(await reporter.flush(1000, 10)).toBe(0);
    expect(taken).toEqual([1]);
    expect(reporter.rejected).toBe(1);
  });

  it('a journal line cut short by a crash is skipped; --report-pending resumes after the last number', () => {
    const journal = RestoreJournal.open(dir, ID);
    journal.append({ restoreId: ID, seq: 0, ...step('read-only on', 1) });
    journal.append({ restoreId: ID, seq: 1, ...step('stop PostgreSQL', 2) });
    journal.ack(0, 'sent');
    appendFileSync(journal.path, '{"report":{"restoreId":"x","se');
    expect(RestoreJournal.all(dir).map((j) => j.pending().map((r) => r.seq))).toEqual([[1]]);
  });

  it('report ids are stable per restore and number; implausible times are refused', () => {
    expect(reportEventId({ restoreId: ID, seq: 1 })).toBe(reportEventId({ restoreId: ID, seq: 1 }));
    expect(reportEventId({ restoreId: ID, seq: 1 })).not.toBe(reportEventId({ restoreId: ID, seq: 2 }));
    expect(reportEventId({ restoreId: ID, seq: 1 })).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const base = { restoreId: ID, seq: 1, ...step('read-only on', 1) };
    expect(reportProblem(base)).toBeUndefined();
    expect(reportProblem({ ...base, at: new Date(Date.now() + 3600_000).toISOString() })).toMatch(/future/);
    expect(reportProblem({ ...base, at: '2020-01-01T00:00:00Z' })).toMatch(/older/);
    expect(reportProblem({ ...base, step: undefined })).toMatch(/names its step/);
  });
});
