/** A PostgreSQL WAL position ("16/B374D848") as a byte offset. */
export function parseLsn(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/** Bytes from `to` back to `from` (never negative). */
export function lsnGap(from: string, to: string): number {
  const gap = parseLsn(from) - parseLsn(to);
  return gap > 0n ? Number(gap) : 0;
}
