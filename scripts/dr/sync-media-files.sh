#!/usr/bin/env bash
# Copies objects missing or different on one backend from the other. A large run becomes a job:
# the script follows it until it ends (exit 0 only if it succeeded).
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/sync-media-files.sh --from backup --to primary [--dry-run]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
from="" to="" dry=false
while [ $# -gt 0 ]; do
  case "$1" in
    --from) sav3_need "$@"; from=$2; shift 2 ;;
    --to) sav3_need "$@"; to=$2; shift 2 ;;
    --dry-run) dry=true; shift ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
norm() { case "$1" in s3-backup|backup) echo backup ;; minio|primary) echo primary ;; *) echo "" ;; esac; }
from=$(norm "$from") to=$(norm "$to")
[ -n "$from" ] && [ -n "$to" ] || { echo "--from and --to (primary|backup) are required" >&2; exit 2; }
answer=$(sav3_call POST /admin/media/sync "{\"from\":\"$from\",\"to\":\"$to\",\"dryRun\":$dry}") || { echo "$answer"; exit 1; }
echo "$answer"
href=$(printf '%s' "$answer" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{process.stdout.write(JSON.parse(s).job?.href??"")}catch{}})')
[ -n "$href" ] || exit 0
while :; do
  sleep 1
  job=$(sav3_call GET "$href") || { echo "$job"; exit 1; }
  status=$(printf '%s' "$job" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).status))')
  [ "$status" = running ] && continue
  echo "$job"
  [ "$status" = succeeded ] && exit 0 || exit 1
done
