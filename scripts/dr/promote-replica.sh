#!/usr/bin/env bash
# Promotes the PostgreSQL replica (pg_promote) after checking it is reachable, in recovery and
# within the lag bound. Prints timings and the data-loss window.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/promote-replica.sh [--dry-run] [--max-lag SECONDS]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
dry=false lag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=true; shift ;;
    --max-lag) lag=$2; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
sav3_call POST /admin/database/promote "{\"confirm\":\"promote-replica\",\"dryRun\":$dry${lag:+,\"maxLagSeconds\":$lag}}"
