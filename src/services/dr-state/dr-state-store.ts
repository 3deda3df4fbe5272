import type { Redis } from 'ioredis';
import type { DrState, InstanceHeartbeat } from './dr-state.ts';

export type CasResult = { ok: true } | { ok: false; current: DrState | null };

/** Where the shared DR state lives; Redis in production, a Map in service tests. */
export interface DrStateStore {
  read(): Promise<DrState | null>;
  /** Writes `next` only if the stored version is still `expectedVersion` (0 = nothing stored). */
  compareAndSet(expectedVersion: number, next: DrState): Promise<CasResult>;
  /** Puts back a state after Redis lost its data: only if nothing newer is stored. */
  restore(state: DrState): Promise<boolean>;
  heartbeat(beat: InstanceHeartbeat): Promise<void>;
  instances(): Promise<InstanceHeartbeat[]>;
  /** Drops an instance's heartbeat (it stopped after its last request ended: nothing to wait for). */
  forget?(id: string): Promise<void>;
}

// Compare-and-set in one atomic step, publishing the new version to every instance.
const CAS = `
local raw = redis.call('GET', KEYS[1])
local version = 0
if raw then version = cjson.decode(raw).version end
if version ~= tonumber(ARGV[1]) then return raw or false end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 'OK'
`;

const RESTORE = `
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw).version >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
`;

/** Heartbeats older than this are no longer listed as instances. */
export const INSTANCE_TTL_MS = 30_000;

export class RedisDrStateStore implements DrStateStore {
  readonly channel: string;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.channel = `${prefix}dr:changed`;
  }

  private get key(): string {
    return `${this.prefix}dr:state`;
  }

  async read(): Promise<DrState | null> {
    const raw = await this.redis.get(this.key);
    return raw === null ? null : (JSON.parse(raw) as DrState);
  }

  async compareAndSet(expectedVersion: number, next: DrState): Promise<CasResult> {
    const answer = (await this.redis.eval(
      CAS,
      2,
      this.key,
      this.channel,
      String(expectedVersion),
      JSON.stringify(next),
      String(next.version),
    )) as string | null;
    if (answer === 'OK') return { ok: true };
    return { ok: false, current: answer ? (JSON.parse(answer) as DrState) : null };
  }

  async restore(state: DrState): Promise<boolean> {
    const done = await this.redis.eval(RESTORE, 2, this.key, this.channel, String(state.version), JSON.stringify(state));
    return done === 1;
  }

  async heartbeat(beat: InstanceHeartbeat): Promise<void> {
    await this.redis.hset(`${this.prefix}dr:instances`, beat.id, JSON.stringify(beat));
  }

  async instances(): Promise<InstanceHeartbeat[]> {
    const all = await this.redis.hgetall(`${this.prefix}dr:instances`);
    const now = Date.now();
    const live: InstanceHeartbeat[] = [];
    const gone: string[] = [];
    for (const [id, raw] of Object.entries(all)) {
      const beat = JSON.parse(raw) as InstanceHeartbeat;
      if (now - Date.parse(beat.lastSeen) <= INSTANCE_TTL_MS) live.push(beat);
      else gone.push(id);
    }
    if (gone.length > 0) await this.redis.hdel(`${this.prefix}dr:instances`, ...gone);
    return live.sort((a, b) => a.id.localeCompare(b.id));
  }

  async forget(id: string): Promise<void> {
    await this.redis.hdel(`${this.prefix}dr:instances`, id);
  }
}
