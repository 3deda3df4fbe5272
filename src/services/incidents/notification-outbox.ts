import { createHash } from 'node:crypto';
import type { Prisma, PrismaClient } from '../../generated/prisma/client.ts';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics/metrics.ts';

/** One message to one receiver, as it waits in the outbox. */
export interface OutboxMessage {
  idempotencyKey: string;
  receiver: string;
  incidentId: string | null;
  kind: string;
  payload: { text: string } & Record<string, unknown>;
}

/** A webhook receiver: the URL stays in the configuration (it may hold a secret); rows name its digest. */
export interface Receiver {
  id: string;
  url: string;
}

export function receiversOf(urls: readonly string[]): Receiver[] {
  return urls.map((url) => ({ id: createHash('sha256').update(url).digest('hex').slice(0, 16), url }));
}

/** One message to every receiver, each copy with its own idempotency key. */
export function fanOut(
  receivers: readonly Receiver[],
  message: Omit<OutboxMessage, 'receiver' | 'idempotencyKey'> & { key: string },
): OutboxMessage[] {
  const { key, ...rest } = message;
  return receivers.map((r) => ({ ...rest, receiver: r.id, idempotencyKey: `${key}@${r.id}` }));
}

export async function enqueueInTx(tx: Prisma.TransactionClient, messages: OutboxMessage[]): Promise<void> {
  if (messages.length === 0) return;
  await tx.notificationOutbox.createMany({ data: messages.map((m) => ({ ...m, payload: m.payload as object })), skipDuplicates: true });
}

/** The webhook port: POSTs JSON; resolves with the HTTP status, rejects when nothing answered. */
export interface WebhookSender {
  send(url: string, body: unknown, idempotencyKey: string, signal: AbortSignal): Promise<number>;
}

export const fetchSender: WebhookSender = {
  async send(url, body, idempotencyKey, signal) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
      body: JSON.stringify(body),
      signal,
      redirect: 'error',
    });
    await res.arrayBuffer().catch(() => undefined);
    return res.status;
  },
};

export interface OutboxOptions {
  prisma: () => PrismaClient;
  receivers: readonly Receiver[];
  sender: WebhookSender;
  instanceId: string;
  logger: Logger;
  metrics: Pick<Metrics, 'notificationsPending' | 'notificationDeliveries'>;
  pollMs: number;
  /** First retry delay; doubles per attempt up to `maxBackoffMs`. */
  backoffMs: number;
  maxBackoffMs: number;
  sendTimeoutMs: number;
  /** Rounds are skipped while this says PostgreSQL is down (its probe fails). */
  databaseUp?: () => boolean;
}

interface Claimed {
  seq: bigint;
  idempotency_key: string;
  receiver: string;
  payload: unknown;
  attempts: number;
}

/**
 * Delivers the outbox. Invariants: every row is delivered (retried with capped exponential backoff
 * while its receiver fails, never dropped); a row is sent by one instance at a time (claimed with
 * FOR UPDATE SKIP LOCKED and leased for far longer than a send may take), and once a receiver
 * accepted it, it is marked sent and never claimed again; rows reach each receiver in order (a row
 * waits while an older one to the same receiver is pending). A crash between the receiver's 2xx
 * and the mark leaves the row to be sent again after the lease: receivers dedupe by the
 * Idempotency-Key header, which is the same on every attempt.
 */
export class NotificationOutboxWorker {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  /** Rows a receiver accepted whose "sent" mark failed (PostgreSQL blipped): marked first next round, within the lease. */
  private readonly unmarked = new Set<bigint>();

  constructor(private readonly o: OutboxOptions) {}

  private get leaseSeconds(): number {
    return Math.ceil((this.o.sendTimeoutMs * 4) / 1000) + 5;
  }

  start(): void {
    if (this.o.receivers.length === 0) return;
    this.stopped = false;
    const tick = () => {
      this.running = this.drain()
        .catch((err: unknown) => this.o.logger.warn({ err: errorSummary(err) }, 'notification outbox: PostgreSQL unavailable; will retry'))
        .then(() => undefined);
      void this.running.then(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.o.pollMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Rounds of sending while they deliver something (one message per receiver per round keeps order). */
  private async drain(): Promise<void> {
    if (this.o.databaseUp && !this.o.databaseUp()) return;
    for (let round = 0; round < 50 && !this.stopped; round++) {
      if ((await this.runOnce()) === 0) return;
    }
  }

  /** Claims what is due, sends it, records the outcome; returns how many were sent. */
  async runOnce(): Promise<number> {
    for (const seq of [...this.unmarked]) {
      await this.markSent(seq);
      this.unmarked.delete(seq);
    }
    const ids = this.o.receivers.map((r) => r.id);
    const claimed = await this.o.prisma().$queryRaw<Claimed[]>`
      WITH due AS (
        SELECT o.seq FROM notification_outbox o
        WHERE o.status = 'pending' AND o.receiver = ANY(${ids}) AND o.next_attempt_at <= now()
          AND (o.claimed_until IS NULL OR o.claimed_until < now())
          AND NOT EXISTS (SELECT 1 FROM notification_outbox p WHERE p.receiver = o.receiver AND p.status = 'pending' AND p.seq < o.seq)
        ORDER BY o.seq LIMIT 20
        FOR UPDATE OF o SKIP LOCKED)
      UPDATE notification_outbox n SET claimed_by = ${this.o.instanceId}, claimed_until = now() + make_interval(secs => ${this.leaseSeconds}), attempts = n.attempts + 1
      FROM due WHERE n.seq = due.seq
      RETURNING n.seq, n.idempotency_key, n.receiver, n.payload, n.attempts`;
    let sent = 0;
    await Promise.all(
      claimed.map(async (row) => {
        if (await this.deliver(row)) sent += 1;
      }),
    );
    await this.refreshPending();
    return sent;
  }

  private async deliver(row: Claimed): Promise<boolean> {
    const receiver = this.o.receivers.find((r) => r.id === row.receiver)!;
    let failure: string | undefined;
    try {
      const status = await this.o.sender.send(receiver.url, row.payload, row.idempotency_key, AbortSignal.timeout(this.o.sendTimeoutMs));
      if (status < 200 || status > 299) failure = `HTTP ${status}`;
    } catch (err) {
      // Only the error's kind is kept: messages may name hosts or carry the URL's secret.
      failure = (err as { name?: string })?.name === 'TimeoutError' ? 'timeout' : 'unreachable';
    }
    const prisma = this.o.prisma();
    if (failure === undefined) {
      this.o.metrics.notificationDeliveries.inc({ result: 'sent' });
      try {
        await this.markSent(row.seq);
      } catch (err) {
        this.unmarked.add(row.seq);
        throw err;
      }
      return true;
    }
    const delayMs = Math.min(this.o.maxBackoffMs, this.o.backoffMs * 2 ** Math.min(20, row.attempts - 1));
    const jittered = Math.round(delayMs * (0.8 + Math.random() * 0.4));
    await prisma.$executeRaw`UPDATE notification_outbox SET next_attempt_at = now() + make_interval(secs => ${jittered / 1000}), claimed_by = NULL, claimed_until = NULL, last_error = ${failure} WHERE seq = ${row.seq} AND claimed_by = ${this.o.instanceId}`;
    this.o.metrics.notificationDeliveries.inc({ result: 'failed' });
    this.o.logger.warn(
      { receiver: row.receiver, attempts: row.attempts, failure, retryInMs: jittered },
      'notification delivery failed; will retry',
    );
    return false;
  }

  private async markSent(seq: bigint): Promise<void> {
    await this.o.prisma()
      .$executeRaw`UPDATE notification_outbox SET status = 'sent', sent_at = now(), claimed_by = NULL, claimed_until = NULL, last_error = NULL WHERE seq = ${seq} AND claimed_by = ${this.o.instanceId}`;
  }

  async refreshPending(): Promise<number> {
    const n = await this.o.prisma().notificationOutbox.count({ where: { status: 'pending' } });
    this.o.metrics.notificationsPending.set(n);
    return n;
  }
}

export function errorSummary(err: unknown): string {
  return (err as { code?: string })?.code ?? (err as Error)?.name ?? 'error';
}
