#!/usr/bin/env bash
# Resets the shared DR state to the initial one (read-only off, media primary, database target
# --database, default primary), recording the database nodes configured now. Read-only mode stays
# on when the target does not take writes at the reset (a standby, fenced, commits waiting for a
# missing synchronous standby, not answering; readOnly.reason says why): lift it with
# disable-readonly-mode.sh once the target takes writes. Only for a state that
# does not match the configured nodes (writes refused with state_mismatch), e.g. one left in Redis by
# an earlier cluster, or a state lost from Redis that no instance could vouch for (state_unknown).
# Refused (412 newer_writable_<node>) when the other node takes writes on a newer timeline, and
# (412 older_than_newest_timeline) when the target is on an older timeline than the newest recorded
# for the cluster, unless --accept-older-timeline gives up what only the newer timeline holds (it is
# recorded as abandoned). A node fenced as a former primary stays fenced: lift that on the node
# (ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf()) once sure, then run
# disable-readonly-mode.sh. Audited.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/reset-dr-state.sh --reason "stale state from the drill" [--database replica] [--accept-older-timeline] --yes
set -euo pipefail
. "$(dirname "$0")/lib.sh"
reason="" yes=false database=primary accept=false
while [ $# -gt 0 ]; do
  case "$1" in
    --reason) sav3_need "$@"; reason=$2; shift 2 ;;
    --database) sav3_need "$@"; database=$2; shift 2 ;;
    --accept-older-timeline) accept=true; shift ;;
    --yes) yes=true; shift ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$reason" ] || { echo "--reason is required" >&2; exit 2; }
case "$database" in primary|replica) ;; *) echo "--database must be primary or replica" >&2; exit 2 ;; esac
[ "$yes" = true ] || { echo "--yes is required: this replaces the DR state every instance follows" >&2; exit 2; }
extra=""
[ "$accept" = true ] && extra=',"acceptOlderTimeline":true'
sav3_call POST /admin/dr/state/reset "{\"confirm\":\"reset-dr-state\",\"reason\":$(json_string "$reason"),\"database\":\"$database\"$extra}"
