import { redactDeep, redactSecrets } from '../../src/services/redact-secrets.ts';

describe('redactSecrets', () => {
  it.each([
    ['connect postgres://sav3:hunter2@db1:5432/x failed', 'connect postgres://[redacted]@db1:5432/x failed'],
    ['postgresql://replicator@db2/x', 'postgresql://[redacted]@db2/x'],
    ['PGPASSWORD=hunter2 pgbackrest', 'PGPASSWORD=[redacted] pgbackrest'],
    ['host=db password=hunter2 user=x', 'host=db password=[redacted] user=x'],
    ['?sslmode=require&password=hunter2&x=1', '?sslmode=require&password=[redacted]&x=1'],
    ['{"token":"tok-123"}', '{"token":[redacted]}'],
    ['secret_key: "a b"', 'secret_key: [redacted]'],
    ['Authorization: Bearer abc.def', 'Authorization: Bearer [redacted]'],
    ['authorization: Basic dXNlcjpwYXNz', 'authorization: Basic [redacted]'],
    ['sent bearer abc123', 'sent bearer [redacted]'],
    ['jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln', 'jwt [redacted]'],
    ['key AKIAABCDEFGHIJKLMNOP', 'key [redacted]'],
  ])('%s', (input, expected) => {
    expect(redactSecrets(input)).toBe(expected);
    expect(redactSecrets(expected)).toBe(expected);
  });

  it('leaves ordinary error texts alone', () => {
    for (const text of [
      'pgbackrest restore failed: exit 56 (repo unreachable)',
      'basic check failed; token expired',
      'step verify took 3 s',
    ])
      expect(redactSecrets(text)).toBe(text);
  });

  it('redacts every string of a value, keeping its shape', () => {
    expect(redactDeep({ a: ['password=x', 1, null], b: { c: 'ok' } })).toEqual({ a: ['password=[redacted]', 1, null], b: { c: 'ok' } });
  });
});
