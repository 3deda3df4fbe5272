#!/usr/bin/env bash
# Shared by the scripts that work on a PostgreSQL node's data directory (rebuild-primary.sh,
# setup-replication.sh): server binaries, quiet SQL, control-file facts, messages and exit codes.
set -euo pipefail

PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5}

say() { echo "$(basename "$0" .sh): $*"; }
fail() { echo "$(basename "$0" .sh): $*" >&2; exit 1; }
usage_error() { echo "$(basename "$0" .sh): $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] || usage_error "$1 needs a value"; }

# A connection string without its password (key=value or URL form).
redact() { sed -E 's/(password=)[^ ]*/\1***/; s#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }

# A value inside a single-quoted postgresql.conf string.
quote() { sed "s/'/''/g" <<<"$1"; }

# One value from a query (unaligned, tuples only), errors to stderr.
sql() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

# A line of pg_controldata, e.g. control_field DIR 'Database system identifier'.
control_field() { LC_ALL=C "$PG_BIN/pg_controldata" -D "$1" | sed -n "s/^$2: *//p"; }

running() { "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

# How to reach the server of a data directory on this host: its own socket and port.
local_conninfo() {
  local port socket
  port=$("$PG_BIN/postgres" -D "$1" -C port)
  socket=$("$PG_BIN/postgres" -D "$1" -C unix_socket_directories | cut -d, -f1 | xargs)
  echo "host=${socket:-/var/run/postgresql} port=$port dbname=postgres"
}

# A connection string with one more parameter, in either form.
with_param() {
  case "$1" in
    postgres://*|postgresql://*) if [[ "$1" == *\?* ]]; then echo "$1&$2"; else echo "$1?$2"; fi ;;
    *) echo "$1 $2" ;;
  esac
}

# The newest timeline of a data directory whose server is down. The control file's checkpoint
# timeline lags after a promotion until the next checkpoint (a node killed right after it still
# says the old one); the history file a promotion writes at once in pg_wal does not.
data_dir_timeline() {
  local tli h
  tli=$(control_field "$1" "Latest checkpoint's TimeLineID")
  for h in "$1"/pg_wal/*.history; do
    [ -e "$h" ] || continue
    h=$(basename "$h" .history)
    if [[ "$h" =~ ^[0-9A-F]{8}$ ]] && ((16#$h > tli)); then tli=$((16#$h)); fi
  done
  echo "$tli"
}

# The timeline a running server writes or replays (from its WAL file names).
server_timeline() {
  local tli
  tli=$(sql "$1" "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli::text FROM pg_stat_wal_receiver) ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END")
  if [[ "$tli" =~ ^[0-9A-F]{8}$ ]]; then echo $((16#$tli)); else echo "${tli:-0}"; fi
}
