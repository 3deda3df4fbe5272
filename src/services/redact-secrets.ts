import { mapStrings } from '../lib/map-strings.ts';

/**
 * Removes credentials from a free text (an error message from a tool, an alert annotation, an
 * operator's incident text) before it is stored or shown: the userinfo of a connection string
 * (`postgres://user:pass@host`, also with an `@` in the password, also without a scheme:
 * `user:pass@host:5432`), `key=value` and `key: value` pairs whose key names a secret
 * (`password=`, `pass=`, `pwd=`, `PGPASSWORD=`, `token=`, `secret_key:`…), command-line options
 * (`--password X`, `--password=X`, `mysql -pX`), bearer and basic credentials (everything up to
 * the next whitespace: a token may hold any printable character), JSON web tokens and AWS access
 * key ids.
 */
const SECRET_WORD = String.raw`(?:password|passwd|pwd|secret(?:[_-]?(?:access[_-]?)?key)?|token|api[_-]?key|access[_-]?key(?:[_-]?id)?|private[_-]?key|credentials?)`;
// `pass` only as a whole key (not `bypass=`, `compass:`).
const SECRET_KEY = String.raw`(?:[A-Za-z_.-]*${SECRET_WORD}|(?<![A-Za-z0-9])pass(?:phrase)?)`;

const RULES: [RegExp, string][] = [
  // scheme://user:password@ (or scheme://token@): the whole userinfo goes, up to the last `@`
  // before the host (a password may contain `@`).
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#]*@/gi, '$1[redacted]@'],
  // user:password@host without a scheme (up to the last `@` of the word); not `scheme://…`.
  [/(^|[\s"'(=,;<>[{])[^\s:@/"'[\]=]+:(?!\/\/)\S*@(?=[A-Za-z0-9[])/g, '$1[redacted]@'],
  // Authorization: Bearer …, Authorization: Basic …, Authorization=…
  [/\b(authorization["']?\s*[=:]\s*["']?)((?:bearer|basic|digest|token)\s+)?[^\s"',;]+/gi, '$1$2[redacted]'],
  // a bearer token anywhere: everything up to whitespace
  [/\b(bearer\s+)\S+/gi, '$1[redacted]'],
  // --password X, --password=X, -password X, --api-key X…
  [new RegExp(String.raw`(^|\s)(--?${SECRET_KEY})(=|\s+)("[^"]*"|'[^']*'|\S+)`, 'gi'), '$1$2$3[redacted]'],
  // mysql -pPASSWORD (the password glued to -p; mysql, mysqldump, mysqladmin, mariadb…)
  [/\b((?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mariadb|mariadb-dump)\b[^\n]*?\s-p)(?!\s)(\S+)/gi, '$1[redacted]'],
  // password=…, "token": "…", PGPASSWORD=…, ?sslpassword=…&
  [new RegExp(String.raw`(${SECRET_KEY}["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&'"}]+)`, 'gi'), '$1[redacted]'],
  // JSON web tokens
  [/\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g, '[redacted]'],
  // AWS access key ids
  [/\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g, '[redacted]'],
];

export function redactSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of RULES) out = out.replace(pattern, replacement);
  return out;
}

/** redactSecrets on every string value of a JSON-like value (object keys are kept as they are). */
export function redactDeep(value: unknown): unknown {
  return mapStrings(value, redactSecrets);
}
