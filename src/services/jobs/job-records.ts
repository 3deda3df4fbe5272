/**
 * Job records (`jobs:<id>` keys, read by GET /admin/jobs/{id}) for the jobs an API instance runs
 * itself (media sync, media verify). The port the services see; Redis behind it in production.
 */
export interface JobRecordStore {
  save(id: string, record: object, ttlSeconds: number): Promise<void>;
  /** The record, or undefined when there is none; throws when the store does not answer. */
  load<T>(id: string): Promise<T | undefined>;
}

/** The Redis commands job records need; an ioredis client is one. */
export interface KeyValueRedis {
  set(key: string, value: string, exToken: 'EX', seconds: number): Promise<unknown>;
  get(key: string): Promise<string | null>;
}

export class RedisJobRecords implements JobRecordStore {
  constructor(
    private readonly redis: KeyValueRedis,
    private readonly prefix: string,
  ) {}

  async save(id: string, record: object, ttlSeconds: number): Promise<void> {
    await this.redis.set(`${this.prefix}jobs:${id}`, JSON.stringify(record), 'EX', ttlSeconds);
  }

  async load<T>(id: string): Promise<T | undefined> {
    const raw = await this.redis.get(`${this.prefix}jobs:${id}`);
    return raw === null ? undefined : (JSON.parse(raw) as T);
  }
}
