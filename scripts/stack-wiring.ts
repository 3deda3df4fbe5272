// The Redis key prefix of a `npm run stack` run. The API queues jobs under its prefix and the
// worker takes them under its own: both must be the same, or jobs never run (and the worker polls
// the shared `sav3:` keys of other stacks).
export function stackPrefixes(
  ownCluster: boolean,
  now = Date.now(),
): { service: { redisKeyPrefix?: string }; worker: { redisKeyPrefix?: string } } {
  const redisKeyPrefix = ownCluster ? `sav3:stack:${now}:` : undefined;
  return { service: { redisKeyPrefix }, worker: { redisKeyPrefix } };
}
