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
    // A token may hold any printable character: everything up to whitespace goes.
    ['sent Bearer abc!defSECRET now', 'sent Bearer [redacted] now'],
    ['Authorization: Bearer abc;defSECRET', 'Authorization: Bearer [redacted]'],
    // user:password@host without a scheme, also with an @ in the password.
    ['connect sav3:hunter2@db1:5432 failed', 'connect [redacted]@db1:5432 failed'],
    ['dsn=u:p@ss@db1:5432/x', 'dsn=[redacted]@db1:5432/x'],
    // A password holding @: redacted up to the last @ before the host.
    ['postgres://u:p@ssSECRET@h/x', 'postgres://[redacted]@h/x'],
    ['pass=hunter2 user=x', 'pass=[redacted] user=x'],
    ['pwd=hunter2', 'pwd=[redacted]'],
    ['passwd: hunter2', 'passwd: [redacted]'],
    ['pg_dump --password hunter2 -h db', 'pg_dump --password [redacted] -h db'],
    ['tool --password=hunter2', 'tool --password=[redacted]'],
    ['tool --api-key "a b" x', 'tool --api-key [redacted] x'],
    ['mysql -uroot -phunter2 sav3', 'mysql -uroot -p[redacted] sav3'],
    ['mysqldump -h db -phunter2', 'mysqldump -h db -p[redacted]'],
  ])('%s', (input, expected) => {
    expect(redactSecrets(input)).toBe(expected);
    expect(redactSecrets(expected)).toBe(expected);
  });

  it('leaves ordinary error texts alone', () => {
    for (const text of [
      'pgbackrest restore failed: exit 56 (repo unreachable)',
      'basic check failed; token expired',
      'step verify took 3 s',
      'bypass=on compass: north',
      'mail ann@example.com at 12:30',
      'see http://host:8080/path@x',
      'psql -p 5432 -h db',
      'mysql -p sav3',
    ])
      expect(redactSecrets(text)).toBe(text);
  });

  it('redacts every string of a value, keeping its shape', () => {
    expect(redactDeep({ a: ['password=x', 1, null], b: { c: 'ok' } })).toEqual({ a: ['password=[redacted]', 1, null], b: { c: 'ok' } });
  });
});
