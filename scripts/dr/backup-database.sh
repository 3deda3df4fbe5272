#!/usr/bin/env bash
# Takes a pgBackRest backup now (on a worker; start-fast) and waits for it to finish.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/backup-database.sh [--type full|diff|incr] [--no-wait]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
type=full wait=true
while [ $# -gt 0 ]; do
  case "$1" in
    --type) [ $# -ge 2 ] || { echo "--type needs a value" >&2; exit 2; }; type=$2; shift 2 ;;
    --no-wait) wait=false; shift ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$type" in full|diff|incr) ;; *) echo "--type must be full, diff or incr" >&2; exit 2 ;; esac
out=$(sav3_call POST /admin/backups "{\"type\":\"$type\"}") || { echo "$out"; exit 1; }
echo "$out"
# Even with --no-wait: exit 0 only when the answer names the backup job it started.
id=$(sav3_started_job backup <<<"$out") || exit 1
[ "$wait" = true ] || exit 0
sav3_wait_job "$id" backup
