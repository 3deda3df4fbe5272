// The restore tool's side of POST /admin/database/restores: every report is first appended to a
// local journal, then sent in order in the background, so an API that is down or hung never holds
// up (or stops) the restore. What the API did not take stays in the journal, marked unsent, and is
// sent at the next report, at the end, or later with `restore-database.sh --report-pending`.
import { appendFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RestoreReport } from './restore-report.ts';
import { httpCall } from '../../adapters/http-call.ts';
import { errorMessage } from '../../lib/error-message.ts';

export type ReportInput = Omit<RestoreReport, 'restoreId' | 'seq' | 'late'>;

/** Sends one report; throws when it was not taken. A PermanentReportError is never retried. */
export type ReportTransport = (report: RestoreReport) => Promise<void>;

/** The API refused the report itself (400): resending cannot help. */
export class PermanentReportError extends Error {}

/** One JSON line per report and per acknowledgement, in `<dir>/restore-<restoreId>.jsonl`. */
export class RestoreJournal {
  readonly path: string;

  constructor(
    readonly dir: string,
    readonly restoreId: string,
  ) {
    this.path = join(dir, `restore-${restoreId}.jsonl`);
  }

  static open(dir: string, restoreId: string): RestoreJournal {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return new RestoreJournal(dir, restoreId);
  }

  append(report: RestoreReport): void {
    appendFileSync(this.path, `${JSON.stringify({ report })}\n`, { mode: 0o600 });
  }

  ack(seq: number, outcome: 'sent' | 'rejected', note?: string): void {
    appendFileSync(this.path, `${JSON.stringify({ ack: seq, outcome, ...(note ? { note } : {}) })}\n`);
  }

  /** Reports not yet acknowledged, in order. */
  pending(): RestoreReport[] {
    const reports = new Map<number, RestoreReport>();
    for (const line of readFileSync(this.path, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      let entry: { report?: RestoreReport; ack?: number };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue; // a line cut short by a crash
      }
      if (entry.report) reports.set(entry.report.seq, entry.report);
      else if (typeof entry.ack === 'number') reports.delete(entry.ack);
    }
    return [...reports.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Every journal in `dir` (restores of this host). */
  static all(dir: string): RestoreJournal[] {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return [];
    }
    return names
      .map((n) => /^restore-([0-9a-f-]{36})\.jsonl$/.exec(n)?.[1])
      .filter((id): id is string => id !== undefined)
      .map((id) => new RestoreJournal(dir, id));
  }
}

export class RestoreReporter {
  private readonly pending: RestoreReport[] = [];
  private readonly failedOnce = new Set<number>();
  private seq = 0;
  private sending: Promise<void> | undefined;
  private warned = false;
  /** The last send failed (and nothing was taken since). */
  private failing = false;
  sent = 0;
  rejected = 0;
  lastError: string | undefined;

  constructor(
    private readonly deps: {
      restoreId: string;
      transport: ReportTransport;
      /** Undefined when no journal could be written: reports are then kept in memory only. */
      journal: RestoreJournal | undefined;
      say: (line: string) => void;
      /** Sending what an earlier restore left: no "the restore goes on" notice. */
      resending?: boolean;
    },
    earlier: RestoreReport[] = [],
  ) {
    for (const r of earlier) {
      this.pending.push(r);
      this.failedOnce.add(r.seq);
      this.seq = Math.max(this.seq, r.seq + 1);
    }
  }

  get restoreId(): string {
    return this.deps.restoreId;
  }

  get unsent(): number {
    return this.pending.length;
  }

  /** Records the report locally and sends it (with anything still unsent before it) in the background. */
  report(input: ReportInput): void {
    const report: RestoreReport = { ...input, restoreId: this.deps.restoreId, seq: this.seq++ };
    try {
      this.deps.journal?.append(report);
    } catch (err) {
      this.deps.say(`report: could not write the local journal ${this.deps.journal?.path} (${(err as Error).message}); kept in memory`);
    }
    this.pending.push(report);
    if (this.failing) this.failedOnce.add(report.seq);
    void this.kick();
  }

  private kick(): Promise<void> {
    this.sending ??= this.drain().finally(() => {
      this.sending = undefined;
    });
    return this.sending;
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const report = this.pending[0]!;
      try {
        await this.deps.transport(this.failedOnce.has(report.seq) ? { ...report, late: true } : report);
        this.deps.journal?.ack(report.seq, 'sent');
        this.sent += 1;
        this.failing = false;
      } catch (err) {
        const message = errorMessage(err);
        if (!(err instanceof PermanentReportError)) {
          this.lastError = message;
          this.failing = true;
          // Everything waiting now reaches the API late (marked so in the audit detail).
          for (const r of this.pending) this.failedOnce.add(r.seq);
          if (!this.warned && !this.deps.resending) {
            this.warned = true;
            this.deps.say(
              `report: the API did not take the restore report (${message}); the restore goes on and records locally${this.deps.journal ? ` in ${this.deps.journal.path}` : ''}; reports are sent when the API answers`,
            );
          }
          return;
        }
        this.deps.say(`report: the API refused report ${report.seq} (${message}); it stays in the journal only`);
        this.deps.journal?.ack(report.seq, 'rejected', message);
        this.rejected += 1;
      }
      this.pending.shift();
    }
  }

  /** Tries to send what is unsent until `timeoutMs` has passed; returns how many remain. */
  async flush(timeoutMs: number, retryMs = 1000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.kick();
      if (this.pending.length === 0 || Date.now() + retryMs > deadline) return this.pending.length;
      await new Promise((r) => setTimeout(r, retryMs));
    }
  }
}

/** POSTs reports to the API with the operator token; bounded, so a hung API costs one timeout per try. */
export function httpTransport(baseUrl: string, token: string, timeoutMs = 5000): ReportTransport {
  return async (report) => {
    const res = await httpCall(`${baseUrl.replace(/\/$/, '')}/admin/database/restores`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(report),
      timeoutMs,
    });
    if (res.status === 201) return;
    const message = `HTTP ${res.status}${res.text ? ` ${res.text.slice(0, 300)}` : ''}`;
    // 400 a bad report, 409 one that contradicts what the API recorded: resending changes nothing.
    if (res.status === 400 || res.status === 409) throw new PermanentReportError(message);
    throw new Error(message);
  };
}
