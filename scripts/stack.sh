#!/usr/bin/env bash
# `npm run stack`: set up, then run the service on a complete local stack (see scripts/stack.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-setup.sh
exec npx tsx scripts/stack.ts "$@"
