#!/usr/bin/env bash
# Turns read-only mode on for every instance.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/enable-readonly-mode.sh --reason "primary db corrupted" [--ttl 900]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
reason="" ttl=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reason) reason=$2; shift 2 ;;
    --ttl) ttl=$2; shift 2 ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$reason" ] || { echo "--reason is required" >&2; exit 2; }
body="{\"enabled\":true,\"reason\":$(json_string "$reason")${ttl:+,\"ttlSeconds\":$ttl}}"
sav3_call PUT /admin/read-only "$body"
