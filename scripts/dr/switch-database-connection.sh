#!/usr/bin/env bash
# Points every instance's database connection at the primary or the replica.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/switch-database-connection.sh --to replica [--dry-run]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
to="" dry=false
while [ $# -gt 0 ]; do
  case "$1" in
    --to) sav3_need "$@"; to=$2; shift 2 ;;
    --dry-run) dry=true; shift ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$to" in primary|replica) ;; *) echo "--to primary|replica is required" >&2; exit 2 ;; esac
sav3_call_checked POST /admin/database/switch "{\"to\":\"$to\",\"dryRun\":$dry}"
