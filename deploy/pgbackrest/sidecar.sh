#!/bin/sh
# pgBackRest side-car: creates the stanza (retrying while the primary starts), checks that WAL
# really reaches the repository, then takes a full backup every BACKUP_INTERVAL_SECONDS.
# Any failure exits non-zero, loudly: compose restarts it and shows the restarts; its health check
# is `pgbackrest check`. Never swallowed: a missing stanza makes archive_command fail forever
# while pg_wal grows on the primary.
set -eu
# As PID 1 the shell has no default SIGTERM action: stop at once (docker stop), not after 10 s.
child=
trap 'if [ -n "$child" ]; then kill "$child" 2>/dev/null; fi; exit 143' TERM INT
interval="${BACKUP_INTERVAL_SECONDS:-86400}"
attempts="${STANZA_CREATE_ATTEMPTS:-30}"

n=1
until pgbackrest --stanza=main stanza-create; do
  if [ "$n" -ge "$attempts" ]; then
    echo "pgbackrest: stanza-create failed $n times; giving up" >&2
    exit 1
  fi
  n=$((n + 1))
  sleep 2
done
pgbackrest --stanza=main check
while true; do
  pgbackrest --stanza=main --type=full backup
  sleep "$interval" &
  child=$!
  wait "$child"
  child=
done
