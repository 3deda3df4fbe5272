#!/usr/bin/env bash
# Sends every instance's media traffic to a backend, after proving it reachable and writable.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/switch-media-backend.sh --to s3-backup|backup|minio|primary [--dry-run] [--force]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
to="" dry=false force=false
while [ $# -gt 0 ]; do
  case "$1" in
    --to) sav3_need "$@"; to=$2; shift 2 ;;
    --dry-run) dry=true; shift ;;
    --force) force=true; shift ;;
    -h|--help) sav3_usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$to" in
  s3-backup|backup) to=backup ;;
  minio|primary) to=primary ;;
  *) echo "--to s3-backup|backup|minio|primary is required" >&2; exit 2 ;;
esac
sav3_call_checked POST /admin/media/switch "{\"to\":\"$to\",\"dryRun\":$dry,\"force\":$force}"
