import { createHash } from 'node:crypto';
import { checkAdminToken, matchAdminToken } from '../../src/admin/admin-auth.ts';
import { FailedAuthLimiter } from '../../src/admin/failed-auth-limiter.ts';
import { AppError } from '../../src/http/app-error.ts';
import { parseAdminTokens } from '../../src/config/admin-tokens.ts';

describe('admin tokens', () => {
  const literal = 'literal-token-value-000000001';
  const hashed = 'hashed-token-value-0000000002';
  const hex = createHash('sha256').update(hashed).digest('hex');

  it('accepts literal and sha256= secrets and matches the right entry', () => {
    const { tokens, problems } = parseAdminTokens(`alice:operator:${literal}, bob:viewer:sha256=${hex}`);
    expect(problems).toEqual([]);
    expect(matchAdminToken(tokens, literal)?.name).toBe('alice');
    expect(matchAdminToken(tokens, hashed)?.name).toBe('bob');
    expect(matchAdminToken(tokens, `sha256=${hex}`)).toBeUndefined();
    expect(matchAdminToken(tokens, 'wrong-token-value-00000000000')).toBeUndefined();
  });

  it('keeps only the digest of a literal token', () => {
    const { tokens } = parseAdminTokens(`alice:operator:${literal}`);
    expect(JSON.stringify(tokens)).not.toContain(literal);
  });

  it('rejects malformed entries, duplicate names and bad hashes', () => {
    const { problems } = parseAdminTokens(`nocolons,a:viewer:sha256=abc,a:viewer:${literal},a:operator:${literal}`);
    expect(problems).toEqual([
      'entry 1: expected name:role:secret',
      'entry 2 (a): sha256= must be followed by 64 hex digits',
      'entry 4 (a): the name is used twice',
    ]);
  });

  it('refuses a secret with whitespace (inside, trailing, a tab), never printing it', () => {
    const { tokens, problems } = parseAdminTokens(
      `a:operator:${literal} ,b:viewer:two words-000000000000000,c:viewer:tab\there-00000000000000000,d:operator:${hashed}`,
    );
    expect(problems).toEqual([
      'entry 1 (a): the secret contains whitespace',
      'entry 2 (b): the secret contains whitespace',
      'entry 3 (c): the secret contains whitespace',
    ]);
    expect(tokens.map((t) => t.name)).toEqual(['d']);
    expect(problems.join('\n')).not.toContain('words');
  });

  it('refuses one secret for two entries (literal or hashed) and an empty entry, never printing the secret', () => {
    const { problems } = parseAdminTokens(
      `ops:operator:${literal},view:viewer:${literal},hash:viewer:sha256=${createHash('sha256').update(literal).digest('hex')}`,
    );
    expect(problems).toEqual(['entry 2 (view): the same secret as ops', 'entry 3 (hash): the same secret as ops']);
    expect(problems.join('\n')).not.toContain(literal);
    expect(parseAdminTokens(`a:operator:${literal},,b:viewer:${hashed}`).problems).toEqual([
      'an entry is empty (two commas in a row, or one at an end)',
    ]);
    expect(parseAdminTokens(`a:operator:${literal},`).problems).toHaveLength(1);
  });

  it('a space after the comma between entries is not part of any secret', () => {
    expect(parseAdminTokens(`a:operator:${literal}, b:viewer:${hashed}`).problems).toEqual([]);
  });

  it('one check for admin and health: wrong tokens count per address and end in 429, a valid token still passes', () => {
    const { tokens } = parseAdminTokens(`alice:operator:${literal}`);
    let now = 0;
    const limiter = new FailedAuthLimiter({ maxFailures: 2, windowMs: 60_000, maxBlockMs: 60_000, now: () => now });
    const deps = { tokens, limiter };
    expect(checkAdminToken(deps, '10.0.0.1', 'wrong-token-value-00000000000')).toBeUndefined();
    expect(checkAdminToken(deps, '10.0.0.1', undefined)).toBeUndefined();
    let thrown: unknown;
    try {
      checkAdminToken(deps, '10.0.0.1', 'wrong-token-value-00000000001');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(AppError);
    expect((thrown as AppError).status).toBe(429);
    expect(Number((thrown as AppError).headers['Retry-After'])).toBeGreaterThan(0);
    expect(checkAdminToken(deps, '10.0.0.1', literal)?.name).toBe('alice');
    // Another address is not affected; the blocked one is let through again after its back-off.
    expect(checkAdminToken(deps, '10.0.0.2', 'wrong-token-value-00000000000')).toBeUndefined();
    now += 60_001;
    expect(checkAdminToken(deps, '10.0.0.1', 'wrong-token-value-00000000000')).toBeUndefined();
  });
});
