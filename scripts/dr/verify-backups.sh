#!/usr/bin/env bash
# The backup inventory: every backup, the WAL archive range, archiving status and RPO exposure.
# Exit 1 when there is no successful backup or archiving is failing.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/verify-backups.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac
out=$(sav3_call GET /admin/backups) || { echo "$out"; exit 1; }
echo "$out"
node -e '
const v = JSON.parse(require("fs").readFileSync(0, "utf8"));
const good = (v.backups || []).filter((b) => !b.error);
if (good.length === 0) { console.error("no successful backup in the repository"); process.exit(1); }
if (v.archiving && v.archiving.failing) { console.error("WAL archiving is failing: last failed " + v.archiving.lastFailedWal); process.exit(1); }
console.error("newest backup " + good[good.length - 1].label + " ended " + good[good.length - 1].stoppedAt + "; RPO exposure " + (v.archiving?.rpoExposureSeconds ?? "unknown") + " s");
' <<<"$out"
