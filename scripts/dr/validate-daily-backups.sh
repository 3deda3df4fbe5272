#!/usr/bin/env bash
# Daily validation: a validation restore of a backup (non-destructive, on a worker) and a media
# backup check; waits for the report. Exit 0 when every check passed.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/validate-daily-backups.sh [--backup latest|LABEL] [--target-time ISO] [--no-wait]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
body="" wait=true
while [ $# -gt 0 ]; do
  case "$1" in
    --backup) [ $# -ge 2 ] || { echo "--backup needs a value" >&2; exit 2; }; body="$body${body:+,}\"backup\":$(json_string "$2")"; shift 2 ;;
    --target-time) [ $# -ge 2 ] || { echo "--target-time needs a value" >&2; exit 2; }; body="$body${body:+,}\"targetTime\":$(json_string "$2")"; shift 2 ;;
    --no-wait) wait=false; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
out=$(sav3_call POST /admin/backups/validate "{$body}") || { echo "$out"; exit 1; }
echo "$out"
# Even with --no-wait: exit 0 only when the answer names the backup.validate job it started.
id=$(sav3_started_job backup.validate <<<"$out") || exit 1
[ "$wait" = true ] || exit 0
sav3_wait_job "$id" backup.validate
