#!/usr/bin/env bash
# Planned switchover with zero loss: checks the standby streams and is caught up, stops writes
# (read-only mode), fences the old primary, waits until the standby replayed everything, promotes
# it, switches every instance, lifts read-only mode. Prints each step's time, the write
# unavailability and the bytes lost (0); a failed step rolls back to the old primary.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/switchover.sh --to primary|replica [--dry-run] [--max-lag-bytes N]
# Afterwards make the old primary a standby on its host: scripts/dr/rebuild-primary.sh --rewind.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
to="" dry=false lag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --to) [ $# -ge 2 ] || { echo "--to needs a value" >&2; exit 2; }; to=$2; shift 2 ;;
    --dry-run) dry=true; shift ;;
    --max-lag-bytes) [ $# -ge 2 ] || { echo "--max-lag-bytes needs a value" >&2; exit 2; }; lag=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$to" in primary|replica) ;; *) echo "--to must be primary or replica" >&2; exit 2 ;; esac
[ -z "$lag" ] || [[ "$lag" =~ ^[0-9]+$ ]] || { echo "--max-lag-bytes must be a whole number" >&2; exit 2; }
sav3_call POST /admin/database/switchover "{\"to\":\"$to\",\"confirm\":\"switchover\",\"dryRun\":$dry${lag:+,\"maxLagBytes\":$lag}}"
