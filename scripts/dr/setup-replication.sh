#!/usr/bin/env bash
# Makes the PostgreSQL node in --pgdata a streaming standby of the current primary and waits until
# it streams: a physical replication slot on the primary, primary_conninfo and primary_slot_name,
# restore_command from the pgBackRest archive as the fallback when streaming cannot serve the WAL.
# Run on the standby's host (as root it re-runs itself as the postgres user).
#   scripts/dr/setup-replication.sh --pgdata DIR --primary CONNINFO [--slot NAME]
#       [--stanza NAME [--pgbackrest-config FILE]] [--log FILE] [--timeout SECONDS] [--dry-run]
# Environment instead of options: PGDATA, SAV3_PRIMARY_CONNINFO, PGBACKREST_STANZA, PGBACKREST_CONFIG.
# Exit codes: 0 streaming; 1 refused or failed (nothing streams); 2 bad usage.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then exec runuser -u postgres -- bash "$0" "$@"; fi
. "$(dirname "$0")/pg-lib.sh"

pgdata=${PGDATA:-} primary=${SAV3_PRIMARY_CONNINFO:-} slot=sav3_standby stanza=${PGBACKREST_STANZA:-}
bconf=${PGBACKREST_CONFIG:-} log="" timeout=60 dry=false
while [ $# -gt 0 ]; do
  case "$1" in
    --pgdata) need_value "$@"; pgdata=$2; shift 2 ;;
    --primary) need_value "$@"; primary=$2; shift 2 ;;
    --slot) need_value "$@"; slot=$2; shift 2 ;;
    --stanza) need_value "$@"; stanza=$2; shift 2 ;;
    --pgbackrest-config) need_value "$@"; bconf=$2; shift 2 ;;
    --log) need_value "$@"; log=$2; shift 2 ;;
    --timeout) need_value "$@"; timeout=$2; shift 2 ;;
    --dry-run) dry=true; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$pgdata" ] || usage_error "--pgdata (or PGDATA) is required"
[ -n "$primary" ] || usage_error "--primary (or SAV3_PRIMARY_CONNINFO) is required"
[[ "$slot" =~ ^[a-z0-9_]{1,63}$ ]] || usage_error "--slot must be 1-63 of a-z, 0-9, _"
[[ "$timeout" =~ ^[0-9]+$ ]] || usage_error "--timeout must be whole seconds"
[ -f "$pgdata/PG_VERSION" ] || fail "$pgdata holds no PostgreSQL data directory (rebuild it first: rebuild-primary.sh)"
[ -n "$log" ] || log="$pgdata/log/pg_ctl.log"

# The primary: reachable, a primary, the same database system as this node.
in_recovery=$(sql "$primary" 'SELECT pg_is_in_recovery()') || fail "the primary does not answer: $(redact "$primary")"
[ "$in_recovery" = f ] || fail "$(redact "$primary") is in recovery: replication must follow the current primary"
remote_id=$(sql "$primary" 'SELECT system_identifier FROM pg_control_system()')
local_id=$(control_field "$pgdata" 'Database system identifier')
[ "$remote_id" = "$local_id" ] || fail "system identifier differs (primary $remote_id, this node $local_id): not a copy of the primary's cluster; rebuild it"
if running "$pgdata"; then
  [ "$(sql "$(local_conninfo "$pgdata")" 'SELECT pg_is_in_recovery()')" = t ] || fail "this node runs as a primary: refusing to make it a standby (rebuild-primary.sh stops a stale old primary first)"
fi

restore=""
if [ -n "$stanza" ]; then
  restore="pgbackrest --stanza=$stanza${bconf:+ --config=$bconf} --pg1-path=$pgdata archive-get %f \"%p\""
fi
say "primary: $(redact "$primary") (system $remote_id); slot: $slot; WAL archive fallback: ${restore:-none (no --stanza)}"
if $dry; then say "dry run: would create the slot if missing, write the standby settings and start streaming"; exit 0; fi

sql "$primary" "SELECT pg_create_physical_replication_slot('$slot', true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot')" >/dev/null
active=$(sql "$primary" "SELECT coalesce(active_pid::text, '') FROM pg_replication_slots WHERE slot_name = '$slot'")
say "replication slot $slot on the primary${active:+ (in use by pid $active)}"

# The standby's settings live in postgresql.auto.conf; earlier ones (and a leftover write fence
# from a switchover, which a standby does not need) are replaced.
conninfo=$(with_param "$primary" "application_name=$slot")
auto="$pgdata/postgresql.auto.conf"
touch "$auto"
grep -Ev '^[[:space:]]*(primary_conninfo|primary_slot_name|restore_command|recovery_target_timeline|default_transaction_read_only)[[:space:]]*=' "$auto" >"$auto.new" || true
{
  echo "primary_conninfo = '$(quote "$conninfo")'"
  echo "primary_slot_name = '$slot'"
  echo "recovery_target_timeline = 'latest'"
  [ -z "$restore" ] || echo "restore_command = '$(quote "$restore")'"
} >>"$auto.new"
mv "$auto.new" "$auto"
touch "$pgdata/standby.signal"

if running "$pgdata"; then
  say "reloading the running standby"
  "$PG_BIN/pg_ctl" -D "$pgdata" reload >/dev/null
else
  say "starting the standby (log: $log)"
  mkdir -p "$(dirname "$log")"
  "$PG_BIN/pg_ctl" -D "$pgdata" -l "$log" -w -t 120 start >/dev/null || fail "the standby did not start; see $log"
fi

local=$(local_conninfo "$pgdata")
deadline=$((SECONDS + timeout))
while :; do
  receiver=$(sql "$local" 'SELECT coalesce((SELECT status FROM pg_stat_wal_receiver LIMIT 1), $$none$$)' 2>/dev/null || echo unreachable)
  sender=$(sql "$primary" "SELECT coalesce((SELECT r.state FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = '$slot'), 'none')" 2>/dev/null || echo unreachable)
  if [ "$receiver" = streaming ] && [ "$sender" = streaming ]; then break; fi
  [ $SECONDS -lt $deadline ] || fail "not streaming after ${timeout} s (standby receiver: $receiver, primary sender: $sender); see $log"
  sleep 0.2
done
lag=$(sql "$primary" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = '$slot'")
say "streaming: the standby receives WAL through slot $slot (replay lag ${lag:-?} bytes)"
