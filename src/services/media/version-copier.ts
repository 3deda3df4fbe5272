import { pipeline } from 'node:stream/promises';
import { HashingStream } from './hashing-stream.ts';
import { versionObjectName } from './media-repository.ts';
import type { StoredVersion } from './media-version-repository.ts';
import type { ObjectStore } from '../../adapters/object-store.ts';

/** The source's content of a version does not hash to the version's sha256 (nothing was copied). */
export class VersionCorruptError extends Error {}

/**
 * Copies one immutable version between backends, checking its sha256 on the way: a version name
 * is written once, so a copy can never replace newer content, and a corrupt source is refused
 * (the copy removed) instead of spread.
 */
export async function copyVersion(
  version: Pick<StoredVersion, 'id' | 'size' | 'sha256' | 'contentType'>,
  from: ObjectStore,
  to: ObjectStore,
): Promise<void> {
  const name = versionObjectName(version.id);
  const source = await from.get(name);
  const hasher = new HashingStream(version.size);
  try {
    await Promise.all([pipeline(source, hasher), to.put(name, hasher, version.size, version.contentType)]);
  } catch (err) {
    source.destroy();
    throw err;
  }
  const digest = hasher.digest();
  if (digest !== version.sha256) {
    await to.remove(name).catch(() => undefined);
    throw new VersionCorruptError(`version ${version.id} on ${from.backend} has sha256 ${digest}, not ${version.sha256}`);
  }
}
