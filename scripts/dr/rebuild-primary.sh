#!/usr/bin/env bash
# Turns this host's PostgreSQL node (the old primary after a failover or a switchover) into a
# streaming standby of the current primary, the fastest way that works, and says which and why:
#   pg_rewind            its timeline can be rewound onto the current primary's (seconds);
#   pgbackrest restore   --type=standby --delta from the backup repository (minutes);
#   pg_basebackup        a full copy from the current primary (always possible, slowest).
# It refuses to touch the current primary, or to copy from a fenced or older one. Then it runs
# setup-replication.sh (slot, streaming).
#   scripts/dr/rebuild-primary.sh --pgdata DIR --source CONNINFO
#       [--from-backup latest|LABEL | --rewind | --basebackup] [--stanza NAME [--pgbackrest-config FILE]]
#       [--slot NAME] [--port N] [--log FILE] [--timeout SECONDS] [--discard-newer-timeline] [--dry-run] --confirm
# --source is the current primary. Without a method it chooses. A node on a newer timeline than the
# source (e.g. one whose promotion a switchover abandoned: the API recorded it) is refused unless
# --discard-newer-timeline says its data is to be thrown away. Environment instead of options:
# PGDATA, SAV3_PRIMARY_CONNINFO, PGBACKREST_STANZA, PGBACKREST_CONFIG.
# Exit codes: 0 rebuilt and streaming (or a dry run that would do it); 1 refused or failed; 2 bad usage.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then exec runuser -u postgres -- bash "$0" "$@"; fi
here=$(cd "$(dirname "$0")" && pwd)
. "$here/pg-lib.sh"

pgdata=${PGDATA:-} source=${SAV3_PRIMARY_CONNINFO:-} stanza=${PGBACKREST_STANZA:-} bconf=${PGBACKREST_CONFIG:-}
method=auto set=latest slot=sav3_standby port="" log="" timeout=60 dry=false confirm=false discard_newer=false
while [ $# -gt 0 ]; do
  case "$1" in
    --pgdata) need_value "$@"; pgdata=$2; shift 2 ;;
    --source) need_value "$@"; source=$2; shift 2 ;;
    --from-backup) need_value "$@"; [ "$method" = auto ] || usage_error "choose one of --from-backup, --rewind, --basebackup"; method=backup; set=$2; shift 2 ;;
    --rewind) [ "$method" = auto ] || usage_error "choose one of --from-backup, --rewind, --basebackup"; method=rewind; shift ;;
    --basebackup) [ "$method" = auto ] || usage_error "choose one of --from-backup, --rewind, --basebackup"; method=basebackup; shift ;;
    --stanza) need_value "$@"; stanza=$2; shift 2 ;;
    --pgbackrest-config) need_value "$@"; bconf=$2; shift 2 ;;
    --slot) need_value "$@"; slot=$2; shift 2 ;;
    --port) need_value "$@"; port=$2; shift 2 ;;
    --log) need_value "$@"; log=$2; shift 2 ;;
    --timeout) need_value "$@"; timeout=$2; shift 2 ;;
    --discard-newer-timeline) discard_newer=true; shift ;;
    --dry-run) dry=true; shift ;;
    --confirm) confirm=true; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$pgdata" ] || usage_error "--pgdata (or PGDATA) is required"
[ -n "$source" ] || usage_error "--source (the current primary; or SAV3_PRIMARY_CONNINFO) is required"
[[ "$set" =~ ^[A-Za-z0-9_-]+$ ]] || usage_error "--from-backup takes latest or a backup label"
[ -z "$port" ] || [[ "$port" =~ ^[0-9]+$ ]] || usage_error "--port must be a number"
$dry || $confirm || usage_error "this replaces the data in $pgdata: add --confirm (or --dry-run to see the plan)"
requested=$method
if [ "$method" = backup ] && [ -z "$stanza" ]; then usage_error "--from-backup needs --stanza (or PGBACKREST_STANZA)"; fi
ms() { echo $(($(date +%s%N) / 1000000)); }
started=$(ms)

# --- The current primary, and what this node is --------------------------------------------------
[ "$(sql "$source" 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] || fail "the source $(redact "$source") does not answer as a primary: it must be the current primary"
identity='SELECT system_identifier || $$/$$ || pg_postmaster_start_time() || $$/$$ || current_setting($$data_directory$$) FROM pg_control_system()'
source_identity=$(sql "$source" "$identity")
source_id=${source_identity%%/*}
source_tli=$(server_timeline "$source")
[ "$(sql "$source" "SELECT current_setting('default_transaction_read_only')")" != on ] || fail "refusing: the source $(redact "$source") is fenced read-only: it is an old primary, not the current one"
exists=false stop=false local_id="" local_tli=""
if [ -f "$pgdata/PG_VERSION" ] && [ -f "$pgdata/global/pg_control" ]; then
  exists=true
  local_id=$(control_field "$pgdata" 'Database system identifier')
  local_tli=$(data_dir_timeline "$pgdata")
fi
if $exists && running "$pgdata"; then
  lconn=$(local_conninfo "$pgdata")
  [ "$(sql "$lconn" "$identity")" != "$source_identity" ] || fail "refusing: $pgdata is the current primary (the source itself); rebuild the other node"
  if [ "$(sql "$lconn" 'SELECT pg_is_in_recovery()')" = f ]; then
    local_tli=$(server_timeline "$lconn")
    if [ "$local_tli" -ge "$source_tli" ]; then
      $discard_newer || fail "refusing: this node runs as a primary on timeline $local_tli and the source is on timeline $source_tli, so this may be the current primary; stop it yourself if it is a stale one (or --discard-newer-timeline if its timeline was abandoned)"
      say "this node runs as a primary on timeline $local_tli, not older than the source's $source_tli: --discard-newer-timeline, its data is discarded; it will be stopped"
    else
      say "this node runs as a stale primary on timeline $local_tli (the current primary is on timeline $source_tli): it will be stopped"
    fi
  else
    say "this node runs as a standby: it will be stopped"
  fi
  stop=true
fi

if $exists && ! $stop && [ -n "$local_tli" ] && [ "$local_tli" -gt "$source_tli" ]; then
  $discard_newer || fail "refusing: this node is on timeline $local_tli, newer than the source's $source_tli: it may hold the newest data (is the source a stale primary?); if its timeline was abandoned (a switchover's failed promotion), --discard-newer-timeline throws its data away"
  say "this node is on timeline $local_tli, newer than the source's $source_tli: --discard-newer-timeline, its data is discarded"
fi

# --- Which way, and why ---------------------------------------------------------------------------
rewind_reason() {  # empty when pg_rewind can be tried on this data directory
  $exists || { echo "no data directory to rewind in $pgdata"; return; }
  [ "$local_id" = "$source_id" ] || { echo "system identifier differs (this node $local_id, the primary $source_id)"; return; }
  [ "$(control_field "$pgdata" 'wal_log_hints setting')" = on ] || [ "$(control_field "$pgdata" 'Data page checksum version')" != 0 ] ||
    { echo "neither wal_log_hints nor data checksums were on, so pg_rewind cannot track changed pages"; return; }
}
backup_reason() {  # empty when the repository holds the wanted backup
  [ -n "$stanza" ] || { echo "no pgBackRest stanza configured (--stanza)"; return; }
  local info
  info=$(pgbackrest ${bconf:+--config="$bconf"} --stanza="$stanza" --output=json info 2>&1) || { echo "pgbackrest info failed: $(tail -n1 <<<"$info")"; return; }
  if [ "$set" = latest ]; then grep -q '"label"' <<<"$info" || echo "the repository of stanza $stanza holds no backup"
  else grep -q "\"label\":\"$set\"" <<<"$info" || echo "the repository of stanza $stanza holds no backup labelled $set"; fi
}
crashed() { ! grep -qx 'shut down\( in recovery\)\?' <<<"$(control_field "$pgdata" 'Database cluster state')"; }
# What pg_rewind itself does before rewinding a server that was not shut down cleanly.
crash_recovery() {
  say "the node was not shut down cleanly: crash recovery first (single-user mode)"
  "$PG_BIN/postgres" --single -F -D "$pgdata" -c archive_mode=off template1 </dev/null >/dev/null 2>&1 || fail "crash recovery of $pgdata failed"
}
# pg_rewind's own dry run decides whether the timelines can be rewound (it needs the server down).
rewind_check() {
  local out
  # A just-promoted source records its new timeline in its control file only at the next
  # checkpoint; without it pg_rewind sees the old timeline and wrongly finds nothing to rewind.
  sql "$source" 'CHECKPOINT' >/dev/null 2>&1 || true
  if out=$("$PG_BIN/pg_rewind" --dry-run -D "$pgdata" --source-server="$source" 2>&1); then return 0; fi
  echo "pg_rewind --dry-run failed: $(grep -v '^$' <<<"$out" | tail -n1)"
  return 1
}

why=""
choose() {
  local r
  if [ "$method" = auto ] || [ "$method" = rewind ]; then
    r=$(rewind_reason)
    local later=""
    if [ -z "$r" ]; then
      if $stop; then later="once the server is stopped"
      elif crashed && $dry; then later="after crash recovery (the node was not shut down cleanly)"
      else
        if crashed; then crash_recovery; fi
        r=$(rewind_check) && r=""
      fi
    fi
    if [ -z "$r" ]; then
      method=rewind; why="pg_rewind: timeline $local_tli of this node can be rewound onto the primary's timeline $source_tli (the fastest way)"
      [ -z "$later" ] || why="$why; pg_rewind --dry-run confirms it $later"
      return 0
    fi
    [ "$method" = auto ] || fail "cannot rewind: $r"
    why="not pg_rewind ($r)"
  fi
  if [ "$method" = auto ] || [ "$method" = backup ]; then
    r=$(backup_reason)
    if [ -z "$r" ]; then
      method=backup; why="${why:+$why; }pgbackrest restore --type=standby --delta of backup $set of stanza $stanza"
      return 0
    fi
    [ "$method" = auto ] || fail "cannot restore from the backup: $r"
    why="$why; not a restore ($r)"
  fi
  method=basebackup; why="${why:+$why; }pg_basebackup: a full copy from the current primary"
}
choose
say "the current primary: $(redact "$source") on timeline $source_tli"
say "method: $why"
if $dry; then say "dry run: nothing changed"; exit 0; fi

# --- Act ------------------------------------------------------------------------------------------
if $stop; then
  say "stopping the server in $pgdata (fast)"
  "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 60 stop >/dev/null
  if [ "$method" = rewind ] && ! r=$(rewind_check); then
    [ "$requested" = auto ] || fail "cannot rewind: $r"
    stop=false method=auto
    choose
    say "method now: $why"
  fi
fi

# The node's own configuration (its port, its access rules) survives every way of rebuilding.
saved=$(mktemp -d)
trap 'rm -rf "$saved"' EXIT
if $exists; then
  for f in postgresql.conf pg_hba.conf pg_ident.conf postgresql.auto.conf; do
    [ ! -f "$pgdata/$f" ] || cp -p "$pgdata/$f" "$saved/$f"
  done
fi

step_started=$(ms)
case "$method" in
  rewind)
    sql "$source" 'CHECKPOINT' >/dev/null 2>&1 || true
    out=$("$PG_BIN/pg_rewind" -D "$pgdata" --source-server="$source" 2>&1) || fail "pg_rewind failed: $out"
    say "pg_rewind: $(grep -E 'diverged|no rewind required|Done' <<<"$out" | tr '\n' ' ')"
    ;;
  backup)
    args=(--stanza="$stanza" --pg1-path="$pgdata" restore --type=standby --delta)
    [ "$set" = latest ] || args+=(--set="$set")
    mkdir -p "$pgdata" && chmod 700 "$pgdata"
    out=$(pgbackrest ${bconf:+--config="$bconf"} "${args[@]}" 2>&1) || fail "pgbackrest restore failed: $(tail -n3 <<<"$out")"
    say "pgbackrest restore (delta) of backup $set done"
    ;;
  basebackup)
    mkdir -p "$pgdata" && chmod 700 "$pgdata"
    find "$pgdata" -mindepth 1 -delete
    out=$("$PG_BIN/pg_basebackup" -d "$source" -D "$pgdata" -X stream -c fast 2>&1) || fail "pg_basebackup failed: $out"
    say "pg_basebackup: a full copy made"
    ;;
esac
copy_ms=$(($(ms) - step_started))

for f in postgresql.conf pg_hba.conf pg_ident.conf postgresql.auto.conf; do
  [ ! -f "$saved/$f" ] || cp -p "$saved/$f" "$pgdata/$f"
done
[ -z "$port" ] || echo "port = $port" >>"$pgdata/postgresql.auto.conf"
rm -f "$pgdata/recovery.signal"
# Slots this node held as a primary survive pg_rewind; on a standby an unused slot would keep WAL
# here forever (and come back stale on its next promotion). The current primary holds the one used.
if [ -d "$pgdata/pg_replslot" ] && [ -n "$(ls -A "$pgdata/pg_replslot")" ]; then
  say "dropping stale replication slots: $(ls "$pgdata/pg_replslot" | tr '\n' ' ')"
  find "$pgdata/pg_replslot" -mindepth 1 -delete
fi

setup=(--pgdata "$pgdata" --primary "$source" --slot "$slot" --timeout "$timeout")
[ -z "$stanza" ] || setup+=(--stanza "$stanza")
[ -z "$bconf" ] || setup+=(--pgbackrest-config "$bconf")
[ -z "$log" ] || setup+=(--log "$log")
bash "$here/setup-replication.sh" "${setup[@]}"
say "rebuilt by $method in $copy_ms ms; a streaming standby of the current primary after $(($(ms) - started)) ms in all"
