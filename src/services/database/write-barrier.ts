import type { DrStateService } from '../dr-state/dr-state-service.ts';
import type { ReadOnlyService } from '../read-only/read-only-service.ts';

/**
 * Stops application writes on every instance for a planned change, and lets them resume.
 * `engage` returns once every live instance applied read-only mode (bounded). In-flight writes
 * that started before are not awaited here: the switchover fences the database itself, so such a
 * write either committed before the fence (and is replayed) or fails (and was never acknowledged).
 */
export interface WriteBarrier {
  /** `ttlSeconds` undefined: on until lifted. */
  engage(reason: string, ttlSeconds: number | undefined, by: string): Promise<{ applied: number; total: number }>;
  release(reason: string, by: string): Promise<void>;
}

/** The barrier made of read-only mode and its propagation to every instance. */
export class ReadOnlyWriteBarrier implements WriteBarrier {
  constructor(
    private readonly readOnly: ReadOnlyService,
    private readonly dr: DrStateService,
    /** Defaults to the DR state's bound: an instance not applying by then is past its lease. */
    private readonly propagationMs?: number,
  ) {}

  async engage(reason: string, ttlSeconds: number | undefined, by: string) {
    const change = await this.readOnly.set({ enabled: true, reason, ttlSeconds }, by);
    const { applied, total } = await this.dr.waitForInstances(change.after.version, this.propagationMs);
    return { applied, total };
  }

  async release(reason: string, by: string): Promise<void> {
    await this.readOnly.set({ enabled: false, reason }, by);
  }
}
