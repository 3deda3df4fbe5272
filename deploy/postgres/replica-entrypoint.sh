#!/bin/bash
# The streaming replica builds itself from the primary on first start (pg_basebackup -R), then
# runs as a hot standby. Later starts reuse its data directory.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h postgres -p 5432 -q; do echo "waiting for the primary"; sleep 1; done
  export PGPASSWORD="$(cat /run/secrets/replication_password)"
  pg_basebackup -h postgres -p 5432 -U replicator -D "$PGDATA" -R -X stream -c fast
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c hot_standby_feedback=on
