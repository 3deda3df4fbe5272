#!/usr/bin/env bash
# `npm test`: set up what the suite needs, type-check, then run every test (unit and integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-setup.sh
echo "typecheck: tsc --noEmit"
npx tsc --noEmit
# The topology test (test/topology) starts a whole stack of its own: it runs alone, after the
# rest, so that neither disturbs the other's timing. Given test paths, jest runs just those.
for arg in "$@"; do
  case "$arg" in -*) ;; *) exec npx jest "$@" ;; esac
done
status=0
npx jest --testPathIgnorePatterns '/test/topology/' "$@" || status=$?
# --forceExit: a failed topology test must not leave jest waiting on a process it started.
npx jest test/topology --forceExit "$@" || status=$?
exit "$status"
