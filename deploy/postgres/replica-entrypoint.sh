#!/bin/bash
# The streaming replica builds itself from the primary on first start (pg_basebackup -R), then
# runs as a hot standby; arguments are passed to postgres (the compose `command`). Later starts
# reuse its data directory. A base backup that was interrupted is started again from scratch.
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
primary_host="${PRIMARY_HOST:-postgres}"
primary_port="${PRIMARY_PORT:-5432}"
password_file="${REPLICATION_PASSWORD_FILE:-/run/secrets/replication_password}"
marker="$(dirname "$PGDATA")/basebackup-in-progress"

if [ ! -s "$PGDATA/PG_VERSION" ] || [ -e "$marker" ]; then
  until pg_isready -h "$primary_host" -p "$primary_port" -q; do echo "waiting for the primary"; sleep 1; done
  touch "$marker"
  rm -rf "$PGDATA"
  PGPASSWORD="$(cat "$password_file")" pg_basebackup -h "$primary_host" -p "$primary_port" -U replicator \
    -D "$PGDATA" -R -X stream -c fast
  chmod 700 "$PGDATA"
  rm -f "$marker"
fi
exec postgres -c hot_standby=on -c hot_standby_feedback=on "$@"
