#!/usr/bin/env bash
# Planned switchover with zero loss: checks the standby streams and is caught up, stops writes
# (read-only mode and the write barrier), fences the old primary, waits until the standby replayed
# everything, promotes it, switches every instance, lifts read-only mode, then stops the old
# primary. Prints each step's time, the write unavailability and the bytes lost (0). A step that
# fails before the promotion rolls back to the old primary; after it, the switchover completes.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/switchover.sh --to primary|replica [--dry-run] [--max-lag-bytes N]
# Afterwards make the old primary a standby on its host: scripts/dr/rebuild-primary.sh --rewind.
# Exit codes: 0 done (or a dry run whose checks pass), 1 refused, failed or a failed dry run,
# 2 bad usage, 3 the API is unreachable.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
to="" dry=false lag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --to) sav3_need "$@"; to=$2; shift 2 ;;
    --dry-run) dry=true; shift ;;
    --max-lag-bytes) sav3_need "$@"; lag=$2; shift 2 ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$to" in primary|replica) ;; *) echo "--to must be primary or replica" >&2; exit 2 ;; esac
[ -z "$lag" ] || [[ "$lag" =~ ^[0-9]+$ ]] || { echo "--max-lag-bytes must be a whole number of bytes" >&2; exit 2; }
sav3_call_checked POST /admin/database/switchover "{\"to\":\"$to\",\"confirm\":\"switchover\",\"dryRun\":$dry${lag:+,\"maxLagBytes\":$lag}}"
