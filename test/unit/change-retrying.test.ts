import { ConflictError, DependencyUnavailableError } from '../../src/http/app-error.ts';
import { changeRetrying } from '../../src/services/dr-state/dr-state-service.ts';

describe('changeRetrying: recording what already happened survives a lost compare-and-set', () => {
  it('retries a change that lost the race on the newer state, and returns its result', async () => {
    let calls = 0;
    const dr = {
      change: jest.fn(async () => {
        calls += 1;
        if (calls < 3) throw new ConflictError('another change to the DR state won the race; nothing was changed');
        return { applied: calls } as never;
      }),
    };
    await expect(changeRetrying(dr, (s) => s)).resolves.toEqual({ applied: 3 });
    expect(dr.change).toHaveBeenCalledTimes(3);
  });

  it('gives up after the bound, and never retries another error (Redis unreachable: nothing changed)', async () => {
    const conflict = { change: jest.fn(async () => Promise.reject(new ConflictError('lost'))) };
    await expect(changeRetrying(conflict, (s) => s, 3)).rejects.toBeInstanceOf(ConflictError);
    expect(conflict.change).toHaveBeenCalledTimes(3);
    const down = { change: jest.fn(async () => Promise.reject(new DependencyUnavailableError('redis', 'down'))) };
    await expect(changeRetrying(down, (s) => s)).rejects.toBeInstanceOf(DependencyUnavailableError);
    expect(down.change).toHaveBeenCalledTimes(1);
  });
});
