import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DrState } from './dr-state.ts';

/** This instance's copy of the last applied DR state, to start from when Redis is unreachable. */
export interface DrStateFile {
  readonly path: string;
  read(): DrState | null;
  /** The instances that were live when this instance last confirmed the state (see DrStateService). */
  readPeers?(): string[];
  write(state: DrState, peers?: string[]): void;
}

/** A JSON file replaced atomically (write a temporary file, then rename over the old one). */
export function drStateFile(path: string): DrStateFile {
  return {
    path,
    read() {
      let raw: string;
      try {
        raw = readFileSync(path, 'utf8');
      } catch {
        return null;
      }
      const { peers: _peers, ...state } = JSON.parse(raw) as DrState & { peers?: unknown };
      if (typeof state?.version !== 'number' || !state.readOnly || !state.database || !state.media)
        throw new Error(`${path} does not hold a DR state`);
      return state;
    },
    readPeers() {
      try {
        const { peers } = JSON.parse(readFileSync(path, 'utf8')) as { peers?: unknown };
        return Array.isArray(peers) ? peers.filter((p): p is string => typeof p === 'string') : [];
      } catch {
        return [];
      }
    },
    write(state, peers) {
      mkdirSync(dirname(path), { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(peers ? { ...state, peers } : state), { mode: 0o600 });
      renameSync(tmp, path);
    },
  };
}
