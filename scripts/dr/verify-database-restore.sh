#!/usr/bin/env bash
# After a restore: deep checks of the active database through the API (connect, canary write,
# migrations, replication), then the archiving status of the restored primary.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/verify-database-restore.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac
sav3_call POST /admin/verify/database '{}'
sav3_call GET /admin/backups
