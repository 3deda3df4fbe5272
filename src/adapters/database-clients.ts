import type { DatabaseTarget } from '../domain.ts';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.ts';

export type PrismaFactory = (url: string) => PrismaClient;

/** Request pool settings: a dead or hung server fails a request within seconds, never holds it. */
export const createPrisma: PrismaFactory = (url) =>
  new PrismaClient({
    adapter: new PrismaPg({
      connectionString: url,
      max: 10,
      connectionTimeoutMillis: 3000,
      idleTimeoutMillis: 30_000,
      query_timeout: 30_000,
      application_name: 'sav3-api',
    }),
  });

/**
 * One Prisma client per database target, created on first use. `active` names the target that
 * serves requests.
 */
export class DatabaseClients {
  private readonly clients = new Map<DatabaseTarget, PrismaClient>();
  active: DatabaseTarget = 'primary';

  constructor(
    private readonly urls: Partial<Record<DatabaseTarget, string>>,
    private readonly factory: PrismaFactory = createPrisma,
  ) {}

  has(target: DatabaseTarget): boolean {
    return this.urls[target] !== undefined;
  }

  url(target: DatabaseTarget): string | undefined {
    return this.urls[target];
  }

  client(target: DatabaseTarget = this.active): PrismaClient {
    let client = this.clients.get(target);
    if (!client) {
      const url = this.urls[target];
      if (url === undefined) throw new Error(`database target ${target} is not configured`);
      client = this.factory(url);
      this.clients.set(target, client);
    }
    return client;
  }

  /**
   * Opens `target`'s pool ahead of use (the client, one connection), e.g. a promoted node before
   * the switch to it: the switch then does not pay for the set-up while writes wait. Never throws.
   */
  async warm(target: DatabaseTarget): Promise<void> {
    if (!this.has(target)) return;
    await this.client(target)
      .$queryRawUnsafe('SELECT 1')
      .catch(() => undefined);
  }

  /**
   * Sends new requests to `target` at once; the old pool lets its in-flight queries finish (for up
   * to `drainMs`) and is then closed. Returns whether the drain finished within the bound.
   */
  async setActive(target: DatabaseTarget, drainMs: number): Promise<boolean> {
    const previous = this.active;
    if (previous === target) return true;
    this.active = target;
    const old = this.clients.get(previous);
    this.clients.delete(previous);
    if (!old) return true;
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      old.$disconnect().then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), drainMs);
      }),
    ]);
    clearTimeout(timer);
    return drained;
  }

  /** Closes a target's pool; the next use opens a new one. */
  async release(target: DatabaseTarget): Promise<void> {
    const client = this.clients.get(target);
    this.clients.delete(target);
    await client?.$disconnect();
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.clients.keys()].map((t) => this.release(t)));
  }
}
