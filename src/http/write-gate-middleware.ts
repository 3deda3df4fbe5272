import type { RequestHandler } from 'express';
import type { WriteGate } from '../services/write-gate/write-gate.ts';
import { isClientWrite } from './client-write.ts';

/**
 * Registers every client write (a mutating request outside /admin and /health) with the write gate
 * for as long as it runs, and refuses it up front (503 with the reason) while writes are closed.
 */
export function writeGateMiddleware(gate: WriteGate): RequestHandler {
  return (req, res, next) => {
    if (!isClientWrite(req.method, req.path)) {
      next();
      return;
    }
    const ticket = gate.admit();
    res.once('close', () => gate.release(ticket));
    gate.within(ticket, next);
  };
}
