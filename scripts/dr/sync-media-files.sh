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
# A small run answers its result (200), a large one the media.sync job it started (202): anything
# else (`{}`, HTML, a job of another kind) is not a sync and exits 1.
shape=$(node -e '
let v;
try { v = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch { v = undefined; }
const ok = typeof v === "object" && v !== null;
if (ok && v.async === true) process.stdout.write("job");
else if (ok && v.dryRun === true && typeof v.toCopy === "number") process.stdout.write("done");
else if (ok && v.dryRun === false && v.status === "succeeded") process.stdout.write("done");
else if (ok && v.dryRun === false && v.status === "failed") { console.error("the sync failed: " + (Array.isArray(v.failed) ? v.failed.length : "some") + " object(s) not copied"); process.exit(1); }
else { console.error("the answer is neither a sync result nor a sync job (POST /admin/media/sync)"); process.exit(1); }
' <<<"$answer") || exit 1
[ "$shape" = job ] || exit 0
id=$(sav3_started_job media.sync <<<"$answer") || exit 1
# Bounded at a day, not an hour: a large sync may run longer; one that stops progressing is failed by the API.
sav3_wait_job "$id" media.sync 86400
