import type { Request, Response } from 'express';
import { AppError } from './app-error.ts';

export interface SseStream {
  send(event: string, data: unknown): void;
  onClose(fn: () => void): void;
}

/**
 * Server-sent event streams: headers, a heartbeat comment (keeps proxies from timing out idle
 * streams), a bound on concurrent streams, and an end to every stream on shutdown so draining
 * never waits on them.
 */
export class SseStreams {
  private readonly open = new Set<() => void>();
  private readonly perAddress = new Map<string, number>();

  /** `perAddress`: at most this many streams from one client address (429 beyond). */
  constructor(private readonly opts: { max: number; heartbeatMs: number; perAddress?: number }) {}

  get size(): number {
    return this.open.size;
  }

  start(req: Request, res: Response): SseStream {
    const address = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    const mine = this.perAddress.get(address) ?? 0;
    if (this.opts.perAddress !== undefined && mine >= this.opts.perAddress) {
      const err = new AppError(429, 'too_many_streams', 'too many live event streams from this address; close one or try again later');
      err.headers['Retry-After'] = '30';
      throw err;
    }
    if (this.open.size >= this.opts.max) {
      const err = new AppError(503, 'too_many_streams', 'too many live event streams; try again later');
      err.headers['Retry-After'] = '30';
      throw err;
    }
    this.perAddress.set(address, mine + 1);
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Accel-Buffering', 'no');
    res.flushHeaders();
    res.write('retry: 2000\n\n');
    const closers: (() => void)[] = [];
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), this.opts.heartbeatMs);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      this.open.delete(close);
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left > 0) this.perAddress.set(address, left);
      else this.perAddress.delete(address);
      for (const fn of closers) fn();
      res.end();
    };
    this.open.add(close);
    req.on('close', close);
    return {
      send(event, data) {
        if (!closed) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      },
      onClose(fn) {
        closers.push(fn);
      },
    };
  }

  closeAll(): void {
    for (const close of [...this.open]) close();
  }
}
