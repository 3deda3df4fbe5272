import type { MediaBackendName } from '../config/config.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';

export interface MediaMetadata {
  key: string;
  size: number;
  sha256: string;
  contentType: string;
  /** The backend the object was written to. */
  backend: MediaBackendName;
  createdAt: Date;
}

/** Media metadata rows; PostgreSQL through Prisma in production, a Map in service tests. */
export interface MediaRepository {
  find(key: string): Promise<MediaMetadata | undefined>;
  upsert(meta: MediaMetadata): Promise<MediaMetadata>;
  delete(key: string): Promise<boolean>;
  list(prefix: string, limit: number, after?: string): Promise<MediaMetadata[]>;
}

type Row = { key: string; size: bigint; sha256: string; contentType: string; backend: string; createdAt: Date };

function toMeta(row: Row): MediaMetadata {
  return { ...row, size: Number(row.size), backend: row.backend as MediaBackendName };
}

export class PrismaMediaRepository implements MediaRepository {
  /** Called per query so that a database switch takes effect on the next request. */
  constructor(private readonly prisma: () => PrismaClient) {}

  async find(key: string): Promise<MediaMetadata | undefined> {
    const row = await this.prisma().mediaObject.findUnique({ where: { key } });
    return row ? toMeta(row) : undefined;
  }

  async upsert(meta: MediaMetadata): Promise<MediaMetadata> {
    const data = { size: BigInt(meta.size), sha256: meta.sha256, contentType: meta.contentType, backend: meta.backend, createdAt: meta.createdAt };
    const row = await this.prisma().mediaObject.upsert({ where: { key: meta.key }, create: { key: meta.key, ...data }, update: data });
    return toMeta(row);
  }

  async delete(key: string): Promise<boolean> {
    const { count } = await this.prisma().mediaObject.deleteMany({ where: { key } });
    return count > 0;
  }

  async list(prefix: string, limit: number, after?: string): Promise<MediaMetadata[]> {
    const rows = await this.prisma().mediaObject.findMany({
      where: { key: { startsWith: prefix, ...(after ? { gt: after } : {}) } },
      orderBy: { key: 'asc' },
      take: limit,
    });
    return rows.map(toMeta);
  }
}
