import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError, BadRequestError } from '../http/app-error.ts';
import { errorBody } from '../http/error-middleware.ts';
import { parseOrThrow, wholeNumberParam } from '../http/validate.ts';
import { MAX_KEY_LENGTH, mediaKeySchema } from '../services/media/media-key.ts';
import type { MediaMetadata } from '../services/media/media-repository.ts';
import type { MediaService } from '../services/media/media-service.ts';

/** GET /media's query: a key prefix, a page size and the key to continue after. */
export const listQuerySchema = z.strictObject({
  prefix: z
    .string()
    .max(MAX_KEY_LENGTH)
    .regex(/^[A-Za-z0-9._\-/]*$/, { error: 'must be letters, digits and . _ - /' })
    .default(''),
  limit: wholeNumberParam(1, 1000, 100),
  after: mediaKeySchema.optional(),
});

function keyParam(req: Request): string {
  const key = (req.params as { key?: string | string[] }).key;
  return Array.isArray(key) ? key.join('/') : (key ?? '');
}

function contentLength(req: Request): number | undefined {
  const header = req.headers['content-length'];
  if (header === undefined) return undefined;
  if (!/^\d+$/.test(header)) throw new BadRequestError('invalid Content-Length');
  return Number(header);
}

export function toJson(meta: MediaMetadata) {
  return {
    key: meta.key,
    size: meta.size,
    sha256: meta.sha256,
    contentType: meta.contentType,
    backend: meta.backend,
    createdAt: new Date(meta.createdAt).toISOString(),
  };
}

/** Types a browser renders or runs inline; anything else uploaded is served as an attachment. */
const INLINE_TYPES =
  /^(image\/(png|jpeg|gif|webp|avif|bmp)|video\/[\w.+-]+|audio\/[\w.+-]+|text\/plain|application\/octet-stream|application\/json)$/i;

export function isInlineSafe(contentType: string): boolean {
  return INLINE_TYPES.test(contentType.split(';')[0]!.trim());
}

/**
 * Media content is untrusted: never sniffed, sandboxed with no sources, and downloaded rather
 * than rendered when its type could run script on the API's origin (HTML, SVG, XML, PDF, ...).
 */
function setObjectHeaders(res: Response, meta: MediaMetadata): void {
  res.setHeader('Content-Type', meta.contentType);
  res.setHeader('Content-Length', String(meta.size));
  res.setHeader('ETag', `"${meta.sha256}"`);
  res.setHeader('Last-Modified', new Date(meta.createdAt).toUTCString());
  res.setHeader('X-Content-SHA256', meta.sha256);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Content-Security-Policy', "default-src 'none'; sandbox");
  res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
  if (!isInlineSafe(meta.contentType)) res.setHeader('Content-Disposition', 'attachment');
}

export function mediaRoutes(
  media: MediaService,
  options: {
    idleBodyTimeoutMs: number;
    /** An upload averaging less than this over `minUploadRateWindowMs` (after the first window) gets 408; 0: off. */
    minUploadBytesPerSec?: number;
    minUploadRateWindowMs?: number;
  },
): Router {
  const router = Router();
  // A client that stops sending its upload, or stops reading its download, loses its connection
  // after this much silence, which frees the S3 socket it held. Only the body transfer is timed,
  // never the time the service itself takes to answer.
  const ms = options.idleBodyTimeoutMs;
  const cut = (req: Request) => () => req.socket.destroy(Object.assign(new Error('client body idle'), { code: 'ECLIENTIDLE' }));
  // A trickle (a byte now and then) keeps the idle timer quiet while holding an upload slot and an
  // S3 socket for ever: an upload must also average `minRate` bytes a second over each window.
  const minRate = options.minUploadBytesPerSec ?? 0;
  const rateWindowMs = options.minUploadRateWindowMs ?? 30_000;
  // The client is answered 408 and the connection closed once the answer is out: reading stops at
  // once (the body can no longer complete, so nothing is committed), and the upload in progress
  // fails and frees its S3 socket and spool slot when the connection goes.
  const tooSlow = (req: Request, res: Response) => {
    if (req.complete || req.socket.destroyed) return;
    req.socket.pause();
    if (res.headersSent) {
      cut(req)();
      return;
    }
    // Once the answer is out the request is no longer the server's "incoming" one: closing the
    // socket would not end its body. It is destroyed itself, which fails the upload in progress.
    res.once('finish', () => {
      const err = Object.assign(new Error('upload below the minimum transfer rate'), { code: 'ECLIENTSLOW' });
      req.destroy(err);
      req.socket.destroy(err);
    });
    const slow = new AppError(408, 'upload_too_slow', `the upload averaged less than ${minRate} bytes a second over ${rateWindowMs} ms`);
    res.status(slow.status).set('Connection', 'close').json(errorBody(req, slow));
  };
  // Progress is read from the socket (a 'data' listener would start the body flowing early).
  const idleUpload = (req: Request, res: Response) => {
    let seen = req.socket.bytesRead;
    let lastProgress = Date.now();
    const samples: { at: number; read: number }[] = [{ at: lastProgress, read: seen }];
    const timer = setInterval(
      () => {
        const now = Date.now();
        const read = req.socket.bytesRead;
        if (read !== seen) {
          seen = read;
          lastProgress = now;
        } else if (now - lastProgress >= ms) {
          clearInterval(timer);
          cut(req)();
          return;
        }
        if (minRate <= 0) return;
        samples.push({ at: now, read });
        // The oldest sample at least a window old is the base of the average (none: still in grace).
        while (samples.length > 1 && samples[1]!.at <= now - rateWindowMs) samples.shift();
        const base = samples[0]!;
        if (now - base.at < rateWindowMs) return;
        if (((read - base.read) * 1000) / (now - base.at) < minRate) {
          clearInterval(timer);
          tooSlow(req, res);
        }
      },
      Math.max(20, Math.floor(Math.min(ms, minRate > 0 ? rateWindowMs : ms) / 5)),
    );
    timer.unref();
    const stop = () => clearInterval(timer);
    req.once('end', stop);
    req.once('close', stop);
    req.once('error', stop);
  };
  // A download's source pauses while the client does not read (back-pressure): no data for the
  // bound means the client stalled (or S3 did).
  const idleDownload = (req: Request, res: Response, source: Readable) => {
    const timer = setTimeout(cut(req), ms);
    source.on('data', () => timer.refresh());
    res.once('close', () => clearTimeout(timer));
  };

  router.get('/media', async (req, res) => {
    const query = parseOrThrow(listQuerySchema, req.query, 'invalid query');
    const items = await media.list(query.prefix, query.limit, query.after);
    const last = items.at(-1);
    res.json({ items: items.map(toJson), nextAfter: items.length === query.limit && last ? last.key : null });
  });

  router.put('/media/*key', async (req, res) => {
    idleUpload(req, res);
    const meta = await media.upload({
      key: keyParam(req),
      body: req,
      contentType: req.headers['content-type'],
      declaredLength: contentLength(req),
    });
    res.status(201).location(`/media/${meta.key}`).json(toJson(meta));
  });

  router.head('/media/*key', async (req, res) => {
    const meta = await media.metadata(keyParam(req));
    setObjectHeaders(res, meta);
    res.setHeader('X-Media-Backend', meta.backend);
    res.status(200).end();
  });

  router.get('/media/*key', async (req, res) => {
    const content = await media.download(keyParam(req));
    setObjectHeaders(res, content.meta);
    res.setHeader('X-Media-Backend', content.servedBy);
    // A backend dying mid-stream destroys the response: the client sees a short body, never a
    // complete-looking wrong one.
    idleDownload(req, res, content.stream);
    await pipeline(content.stream, res).catch(() => {
      content.stream.destroy();
      res.destroy();
    });
  });

  router.delete('/media/*key', async (req, res) => {
    await media.remove(keyParam(req));
    res.status(204).end();
  });

  return router;
}
