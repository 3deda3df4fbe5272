#!/bin/bash
# Runs once, when the primary's data directory is created (the image's first-start temporary
# server, socket only): a replication role for the standby.
set -euo pipefail
password_file="${REPLICATION_PASSWORD_FILE:-/run/secrets/replication_password}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set password="$(cat "$password_file")" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
