import type { MediaRepository } from '../media/media-repository.ts';
import type { WriteGate } from './write-gate.ts';

/**
 * The media metadata commit, fenced: an upload or delete moves its key's pointer only if no write
 * barrier passed since the request was admitted (see WriteGate.commit), and only while the
 * database write fence is not above the DR state version it was admitted under. Reads pass through.
 */
export function fencedRepository(repository: MediaRepository, gate: WriteGate): MediaRepository {
  return {
    find: (key) => repository.find(key),
    list: (prefix, limit, after) => repository.list(prefix, limit, after),
    versionCommitted: (version) => repository.versionCommitted(version),
    commitWrite: (write) => gate.commit((fenceEpoch) => repository.commitWrite({ ...write, fenceEpoch })),
    commitDelete: (key) => gate.commit((fenceEpoch) => repository.commitDelete(key, fenceEpoch)),
  };
}
