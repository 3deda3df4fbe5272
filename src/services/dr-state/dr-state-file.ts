import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DrState } from './dr-state.ts';

/** This instance's copy of the last applied DR state, to start from when Redis is unreachable. */
export interface DrStateFile {
  readonly path: string;
  read(): DrState | null;
  write(state: DrState): void;
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
      const state = JSON.parse(raw) as DrState;
      if (typeof state?.version !== 'number' || !state.readOnly || !state.database || !state.media)
        throw new Error(`${path} does not hold a DR state`);
      return state;
    },
    write(state) {
      mkdirSync(dirname(path), { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(state), { mode: 0o600 });
      renameSync(tmp, path);
    },
  };
}
