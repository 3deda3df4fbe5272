#!/usr/bin/env bash
# Shared by the DR runbook scripts: base URL and token from the environment, the token passed to
# curl on standard input (never on the command line, where `ps` would show it), the server's
# JSON printed, and a non-zero exit code when the answer is not 2xx.
set -euo pipefail

: "${SAV3_API_URL:=http://127.0.0.1:3000}"

sav3_call() {
  local method=$1 path=$2 body=${3:-}
  if [ -z "${SAV3_ADMIN_TOKEN:-}" ]; then
    echo "SAV3_ADMIN_TOKEN is not set (an operator token for changes, viewer for reads)" >&2
    return 2
  fi
  local out status
  out=$(mktemp)
  local args=(-sS -o "$out" -w '%{http_code}' -X "$method" -H @-)
  if [ -n "$body" ]; then args+=(-H 'Content-Type: application/json' --data-binary "$body"); fi
  if ! status=$(curl "${args[@]}" "${SAV3_API_URL%/}$path" <<<"Authorization: Bearer $SAV3_ADMIN_TOKEN"); then
    rm -f "$out"
    echo "could not reach $SAV3_API_URL" >&2
    return 3
  fi
  if command -v jq >/dev/null 2>&1; then jq . "$out" 2>/dev/null || cat "$out"; else cat "$out"; echo; fi
  rm -f "$out"
  case "$status" in
    2*) return 0 ;;
    *) echo "HTTP $status" >&2; return 1 ;;
  esac
}

# JSON string escaping for a value given on the command line.
json_string() {
  node -e 'process.stdout.write(JSON.stringify(process.argv[1]))' "$1"
}
