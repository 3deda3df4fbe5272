import type { Redis } from 'ioredis';
import { BackupToolError, type BackupTool, type StanzaInfo } from './pgbackrest.ts';

/**
 * pgBackRest info as the newest worker published it in Redis: the inventory for API instances
 * that have no pgBackRest of their own (the container images: only the worker has it). They never
 * back up or restore themselves.
 */
export class PublishedBackupInfo implements BackupTool {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly maxAgeMs: number,
  ) {}

  static key(prefix: string): string {
    return `${prefix}backup:info`;
  }

  static async publish(redis: Redis, prefix: string, info: StanzaInfo): Promise<void> {
    await redis.set(PublishedBackupInfo.key(prefix), JSON.stringify({ at: Date.now(), info }), 'EX', 7 * 24 * 3600);
  }

  async info(): Promise<StanzaInfo> {
    let raw: string | null;
    try {
      raw = await this.redis.get(PublishedBackupInfo.key(this.prefix));
    } catch (err) {
      throw new BackupToolError('repository_unreachable', 'the backup inventory is read from Redis, which did not answer', String(err));
    }
    if (raw === null)
      throw new BackupToolError('pgbackrest_missing', 'pgBackRest is not configured here and no worker has published the backup inventory');
    const { at, info } = JSON.parse(raw) as { at: number; info: StanzaInfo };
    if (Date.now() - at > this.maxAgeMs) {
      throw new BackupToolError(
        'repository_unreachable',
        `no worker has read the pgBackRest repository for ${Math.round((Date.now() - at) / 1000)} s`,
      );
    }
    return info;
  }

  async backup(): Promise<void> {
    throw new Error('API instances never run backups; a worker does');
  }

  async restore(): Promise<void> {
    throw new Error('API instances never restore; a worker does');
  }
}
