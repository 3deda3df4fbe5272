#!/usr/bin/env bash
# Deep checks of the active database target: connect, canary write/read/delete, migrations,
# replication. Exit 0 when every check passes.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/verify-database.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sav3_no_options "$@"
sav3_call POST /admin/verify/database '{}'
