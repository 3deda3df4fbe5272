import type { RequestHandler } from 'express';
import type { WriteGate } from './write-gate.ts';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function exempt(path: string): boolean {
  return path === '/admin' || path.startsWith('/admin/') || path === '/health' || path.startsWith('/health/');
}

/**
 * Registers every client write (a mutating request outside /admin and /health) with the write gate
 * for as long as it runs, and refuses it up front (503 with the reason) while writes are closed.
 */
export function writeGateMiddleware(gate: WriteGate): RequestHandler {
  return (req, res, next) => {
    if (!MUTATING.has(req.method) || exempt(req.path)) {
      next();
      return;
    }
    const ticket = gate.admit();
    res.once('close', () => gate.release(ticket));
    gate.within(ticket, next);
  };
}
