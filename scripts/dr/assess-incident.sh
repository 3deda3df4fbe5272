#!/usr/bin/env bash
# Proposes an incident severity from the live state and names the rule that matched (primary
# database down or unwritable → P0; media uploads failing or no replica → P1; replica lagging,
# backups stale → P2; warnings only → P3). Prints the assessment JSON and, on stderr, one line.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/assess-incident.sh [--severity auto]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
severity=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --severity) severity=$2; shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ "$severity" = auto ] || { echo "--severity: only auto is assessed (give P0-P3 to create-incident-report.sh directly)" >&2; exit 2; }
answer=$(sav3_call POST /admin/incidents/assess '{}') || { echo "$answer"; exit 1; }
echo "$answer"
printf '%s' "$answer" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const a=JSON.parse(s);process.stderr.write(`proposed severity: ${a.severity??"none"} (${a.reason})\n`)})'
