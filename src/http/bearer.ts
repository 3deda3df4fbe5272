import type { Request } from 'express';

/** The token of an `Authorization: Bearer <token>` header, if well-formed. */
export function bearerToken(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer +([\x21-\x7e]{1,512})\s*$/i.exec(header);
  return match?.[1];
}
