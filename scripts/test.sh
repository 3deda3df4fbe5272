#!/usr/bin/env bash
# `npm test`: set up what the suite needs, type-check, then run every test (unit and integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-setup.sh
echo "typecheck: tsc --noEmit"
npx tsc --noEmit
exec npx jest "$@"
