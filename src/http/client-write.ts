const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Paths that keep accepting changes in read-only mode and while writes are closed: the DR controls and health. */
function exempt(path: string): boolean {
  return path === '/admin' || path.startsWith('/admin/') || path === '/health' || path.startsWith('/health/');
}

/**
 * A client write: a mutating request outside /admin and /health. Read-only mode refuses these
 * (read-only-guard.ts) and the write gate counts them (write-gate-middleware.ts).
 */
export function isClientWrite(method: string, path: string): boolean {
  return MUTATING.has(method) && !exempt(path);
}
