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
    --max-lag) sav3_need "$@"; lag=$2; shift 2 ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$lag" ] && ! [[ $lag =~ ^[0-9]+(\.[0-9]+)?$ ]]; then echo "--max-lag must be a number of seconds" >&2; exit 2; fi
sav3_call_checked POST /admin/database/promote "{\"confirm\":\"promote-replica\",\"dryRun\":$dry${lag:+,\"maxLagSeconds\":$lag}}"
