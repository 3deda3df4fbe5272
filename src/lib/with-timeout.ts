/**
 * `promise`, or a rejection with `new Error(message)` once `ms` have passed, whichever comes
 * first. The work itself is not cancelled (bound it with its own timeouts too); the timer is
 * cleared as soon as the race is decided. `unref`: the timer alone does not keep the process alive.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string, options: { unref?: boolean } = {}): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
        if (options.unref) timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
