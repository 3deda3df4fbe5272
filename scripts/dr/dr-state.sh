#!/usr/bin/env bash
# Prints the shared DR state: version, read-only mode, database and media targets, and every
# instance with the version it has applied.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/dr-state.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sav3_no_options "$@"
sav3_call GET /admin/dr/state
