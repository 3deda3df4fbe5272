#!/usr/bin/env bash
# Turns read-only mode off for every instance.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/disable-readonly-mode.sh --reason "replica promoted"
set -euo pipefail
. "$(dirname "$0")/lib.sh"
reason=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reason) sav3_need "$@"; reason=$2; shift 2 ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$reason" ] || { echo "--reason is required" >&2; exit 2; }
sav3_call PUT /admin/read-only "{\"enabled\":false,\"reason\":$(json_string "$reason")}"
