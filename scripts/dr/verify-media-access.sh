#!/usr/bin/env bash
# Canary checks on both media backends: bucket, upload, download with checksum, delete.
# Exit 0 when the active backend passes.
#   SAV3_API_URL=… SAV3_ADMIN_TOKEN=… scripts/dr/verify-media-access.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
sav3_no_options "$@"
sav3_call POST /admin/verify/media '{}'
