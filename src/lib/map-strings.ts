/**
 * A copy of a JSON-like value with `fn` applied to every string in it, at any depth (arrays and
 * plain objects are walked; a Date and any other value are kept as they are). `keys`: object keys
 * are strings too and go through `fn` as well.
 */
export function mapStrings(value: unknown, fn: (text: string) => string, options: { keys?: boolean } = {}): unknown {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return fn(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object' && !(v instanceof Date))
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [options.keys ? fn(k) : k, walk(x)]));
    return v;
  };
  return walk(value);
}
