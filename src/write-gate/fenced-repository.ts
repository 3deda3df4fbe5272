import type { MediaRepository } from '../media/media-repository.ts';
import type { WriteGate } from './write-gate.ts';

/**
 * The media metadata commit, fenced: an upload or delete saves its row only if no write barrier
 * passed since the request was admitted (see WriteGate.commit). Reads pass through.
 */
export function fencedRepository(repository: MediaRepository, gate: WriteGate): MediaRepository {
  return {
    find: (key) => repository.find(key),
    list: (prefix, limit, after) => repository.list(prefix, limit, after),
    upsert: (meta) => gate.commit(() => repository.upsert(meta)),
    delete: (key) => gate.commit(() => repository.delete(key)),
  };
}
