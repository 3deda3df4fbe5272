/**
 * Removes credentials from a free text (an error message from a tool, an alert annotation) before
 * it is stored or shown: the password of a connection string (`postgres://user:pass@host`), `key=value`
 * and `key: value` pairs whose key names a secret (`password=`, `PGPASSWORD=`, `token=`,
 * `secret_key:`…), bearer and basic credentials, JSON web tokens and AWS access key ids.
 */
const SECRET_KEY = String.raw`[A-Za-z_.-]*(?:password|passwd|pwd|secret(?:[_-]?(?:access[_-]?)?key)?|token|api[_-]?key|access[_-]?key(?:[_-]?id)?|private[_-]?key|credentials?)`;

const RULES: [RegExp, string][] = [
  // scheme://user:password@ (or scheme://token@): the whole userinfo goes.
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]+@/gi, '$1[redacted]@'],
  // Authorization: Bearer …, Authorization: Basic …, Authorization=…
  [/\b(authorization["']?\s*[=:]\s*["']?)((?:bearer|basic|digest|token)\s+)?[^\s"',;]+/gi, '$1$2[redacted]'],
  // a bearer token anywhere
  [/\b(bearer\s+)[A-Za-z0-9._~+/=-]+/gi, '$1[redacted]'],
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

/** redactSecrets on every string (and key) of a JSON-like value. */
export function redactDeep(value: unknown): unknown {
  if (typeof value === 'string') return redactSecrets(value);
  if (Array.isArray(value)) return value.map(redactDeep);
  if (value !== null && typeof value === 'object' && !(value instanceof Date))
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v)]));
  return value;
}
