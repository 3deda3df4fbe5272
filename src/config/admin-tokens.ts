import { createHash } from 'node:crypto';

export type AdminRole = 'viewer' | 'operator';

export interface AdminToken {
  name: string;
  role: AdminRole;
  /** sha256 of the token; the literal is never kept. */
  digest: Buffer;
}

const MIN_LITERAL_LENGTH = 24;

export function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * Parses `name:role:secret,…`. Problems name the entry by position and name, never by its secret.
 */
export function parseAdminTokens(value: string): { tokens: AdminToken[]; problems: string[] } {
  const tokens: AdminToken[] = [];
  const problems: string[] = [];
  const raw = value.split(',').map((e) => e.trimStart());
  // An empty entry (`a,,b` or a trailing comma) is a list edited by hand gone wrong: said, not skipped.
  if (raw.length > 1 && raw.some((e) => e.trim().length === 0)) problems.push('an entry is empty (two commas in a row, or one at an end)');
  const entries = raw.filter((e) => e.trim().length > 0);
  entries.forEach((entry, index) => {
    const first = entry.indexOf(':');
    const second = entry.indexOf(':', first + 1);
    const where = `entry ${index + 1}`;
    if (first <= 0 || second < 0) {
      problems.push(`${where}: expected name:role:secret`);
      return;
    }
    const name = entry.slice(0, first);
    const role = entry.slice(first + 1, second);
    const secret = entry.slice(second + 1);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) {
      problems.push(`${where}: name must be 1-64 characters of A-Z a-z 0-9 . _ -`);
      return;
    }
    if (role !== 'viewer' && role !== 'operator') {
      problems.push(`${where} (${name}): role must be viewer or operator`);
      return;
    }
    // A secret with whitespace is almost always a copy-paste accident (a trailing space or newline):
    // the token the operator holds would never match. Refuse it rather than guess.
    if (/\s/.test(secret)) {
      problems.push(`${where} (${name}): the secret contains whitespace`);
      return;
    }
    let digest: Buffer;
    if (secret.startsWith('sha256=')) {
      const hex = secret.slice('sha256='.length);
      if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
        problems.push(`${where} (${name}): sha256= must be followed by 64 hex digits`);
        return;
      }
      digest = Buffer.from(hex, 'hex');
    } else if (secret.length < MIN_LITERAL_LENGTH) {
      problems.push(`${where} (${name}): the token must be at least ${MIN_LITERAL_LENGTH} characters`);
      return;
    } else {
      digest = sha256(secret);
    }
    if (tokens.some((t) => t.name === name)) {
      problems.push(`${where} (${name}): the name is used twice`);
      return;
    }
    // One secret for two entries makes the holder whichever matches first (a viewer's token acting
    // as an operator's): every secret must be its own.
    const same = tokens.find((t) => t.digest.equals(digest));
    if (same) {
      problems.push(`${where} (${name}): the same secret as ${same.name}`);
      return;
    }
    tokens.push({ name, role, digest });
  });
  return { tokens, problems };
}
