import { mkdirSync, mkdtempSync, rmSync, writeFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertScratchPath, UnsafeRestorePathError } from '../../src/services/backup/scratch-cluster.ts';

describe('a validation restore refuses any path that is not a fresh scratch directory', () => {
  let root: string;
  let live: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'sav3-scratch-unit-'));
    live = mkdtempSync(join(tmpdir(), 'sav3-live-unit-'));
    writeFileSync(join(live, 'PG_VERSION'), '15');
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(live, { recursive: true, force: true });
  });

  it('accepts a new directory inside the scratch root', () => {
    expect(() => assertScratchPath(join(root, 'v-1-a'), root, [live])).not.toThrow();
  });

  it.each([
    ['outside the root', () => join(tmpdir(), 'elsewhere')],
    ['the root itself', () => root],
    ['a traversal out of the root', () => join(root, '..', 'x')],
  ])('refuses %s', (_name, path) => {
    expect(() => assertScratchPath(path(), root, [])).toThrow(UnsafeRestorePathError);
  });

  it('refuses a live data directory, even reached through a symlink inside the root', () => {
    symlinkSync(live, join(root, 'v-1-link'));
    expect(() => assertScratchPath(join(root, 'v-1-link'), root, [live])).toThrow(/live data directory/);
  });

  it('refuses a directory holding a data directory or a running server, or anything at all', () => {
    mkdirSync(join(root, 'a'));
    writeFileSync(join(root, 'a', 'PG_VERSION'), '15');
    expect(() => assertScratchPath(join(root, 'a'), root, [])).toThrow(/already holds a data directory/);
    mkdirSync(join(root, 'b'));
    writeFileSync(join(root, 'b', 'postmaster.pid'), '123');
    expect(() => assertScratchPath(join(root, 'b'), root, [])).toThrow(/running server/);
    mkdirSync(join(root, 'c'));
    writeFileSync(join(root, 'c', 'notes'), 'x');
    expect(() => assertScratchPath(join(root, 'c'), root, [])).toThrow(/not empty/);
  });
});
