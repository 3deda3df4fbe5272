#!/usr/bin/env bash
# Turns read-only mode on for every instance.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/enable-readonly-mode.sh --reason "primary db corrupted" [--ttl 900]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
reason="" ttl=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reason) sav3_need "$@"; reason=$2; shift 2 ;;
    --ttl) sav3_need "$@"; ttl=$2; shift 2 ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$ttl" ] && ! [[ $ttl =~ ^[0-9]+$ ]]; then echo "--ttl must be a whole number of seconds" >&2; exit 2; fi
[ -n "$reason" ] || { echo "--reason is required" >&2; exit 2; }
body="{\"enabled\":true,\"reason\":$(json_string "$reason")${ttl:+,\"ttlSeconds\":$ttl}}"
sav3_call PUT /admin/read-only "$body"
