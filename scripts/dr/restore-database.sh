#!/usr/bin/env bash
# Restores the PostgreSQL primary from a pgBackRest backup, on the database host (destructive):
# read-only on through the API, stop PostgreSQL, pgbackrest restore --delta (point-in-time with a
# target), start, wait for promotion, verify through the API; each step timed.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… DATABASE_URL=… PGBACKREST_STANZA=main PGDATA=… \
#   scripts/dr/restore-database.sh --from-backup latest|<label> [--target-time T | --target-name N] (--confirm | --dry-run)
# Exit codes: 0 done, 1 failed (also a dry run that could not go ahead), 2 usage (nothing done).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -f "$root/dist/restore-database.js" ]; then
  exec node "$root/dist/restore-database.js" "$@"
fi
exec "$root/node_modules/.bin/tsx" "$root/src/restore-database.ts" "$@"
