#!/usr/bin/env bash
# Shared by the DR runbook scripts: base URL and token from the environment, the token passed to
# curl on standard input (never on the command line, where `ps` would show it), the server's
# JSON printed, and a non-zero exit code when the answer is not 2xx. Every call is bounded:
# SAV3_HTTP_TIMEOUT seconds for the whole answer (default 60), SAV3_CONNECT_TIMEOUT to connect
# (default 10); a server that accepts and never answers fails the call (exit 3) within the bound.
set -euo pipefail

: "${SAV3_API_URL:=http://127.0.0.1:3000}"
: "${SAV3_HTTP_TIMEOUT:=60}"
: "${SAV3_CONNECT_TIMEOUT:=10}"
for _bound in SAV3_HTTP_TIMEOUT SAV3_CONNECT_TIMEOUT; do
  if ! [[ "${!_bound}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || [[ "${!_bound}" =~ ^0+(\.0+)?$ ]]; then
    echo "$_bound must be a positive number of seconds" >&2
    exit 2
  fi
done

sav3_call() {
  local method=$1 path=$2 body=${3:-}
  if [ -z "${SAV3_ADMIN_TOKEN:-}" ]; then
    echo "SAV3_ADMIN_TOKEN is not set (an operator token for changes, viewer for reads)" >&2
    return 2
  fi
  local out status
  out=$(mktemp)
  local args=(-sS -o "$out" -w '%{http_code}' --max-time "$SAV3_HTTP_TIMEOUT" --connect-timeout "$SAV3_CONNECT_TIMEOUT" -X "$method" -H @-)
  if [ -n "$body" ]; then args+=(-H 'Content-Type: application/json' --data-binary "$body"); fi
  local rc=0
  status=$(curl "${args[@]}" "${SAV3_API_URL%/}$path" <<<"Authorization: Bearer $SAV3_ADMIN_TOKEN") || rc=$?
  if [ "$rc" -ne 0 ]; then
    rm -f "$out"
    if [ "$rc" -eq 28 ]; then echo "no answer from $SAV3_API_URL within ${SAV3_HTTP_TIMEOUT}s ($method $path; SAV3_HTTP_TIMEOUT)" >&2
    else echo "could not reach $SAV3_API_URL" >&2; fi
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

# The header comment of the calling script, as its --help.
sav3_usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# Options taking a value: exit 2 when it is missing (`--to` at the end, or followed by an option).
sav3_need() {
  if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then
    echo "$1 needs a value (see --help)" >&2
    exit 2
  fi
}

# For scripts without options: --help prints usage, anything else is refused with exit 2.
sav3_no_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) sav3_usage; exit 0 ;;
      *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
  done
}

# Runs a change as a dry run or for real; a dry run whose checks fail exits 1 (the answer is 200).
sav3_call_checked() {
  local out
  out=$(sav3_call "$@") || { printf '%s\n' "$out"; return 1; }
  printf '%s\n' "$out"
  printf '%s' "$out" | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let j; try { j = JSON.parse(s); } catch { process.exit(0); }
      const failed = (j.checks || []).filter((c) => c.ok === false || c.status === "fail");
      if (j.dryRun && (failed.length > 0 || j.wouldPromote === false)) {
        process.stderr.write("dry run: checks failed: " + failed.map((c) => c.name).join(", ") + "\n");
        process.exit(1);
      }
    });'
}

# Backup and validation jobs: polls GET /admin/jobs/<id> until the job finishes; prints it and
# returns 0 when it succeeded, 1 when it failed.
sav3_wait_job() {
  local id=$1 timeout=${2:-3600} out status misses=0
  local deadline=$((SECONDS + timeout))
  # A job id is a UUID: an answer without one (or not JSON) started nothing that can be waited for.
  if ! [[ "$id" =~ ^[0-9a-fA-F-]{36}$ ]]; then echo "the API's answer names no job (job.id missing or malformed): nothing started that can be followed" >&2; return 1; fi
  while :; do
    # A restarting API is waited for; one that fails 5 polls in a row (each bounded) is given up on.
    if out=$(sav3_call GET "/admin/jobs/$id" 2>/dev/null); then misses=0; else
      misses=$((misses + 1))
      if [ "$misses" -ge 5 ]; then echo "job $id: the API did not answer 5 polls in a row (${SAV3_API_URL}); the job may still run: GET /admin/jobs/$id" >&2; return 1; fi
    fi
    # Only this job's own record counts: anything else (another id, no id, not JSON) is not an answer.
    status=$(node -e 'try{const j=JSON.parse(require("fs").readFileSync(0,"utf8"));process.stdout.write(j&&j.id===process.argv[1]?String(j.status||""):"not-this-job")}catch{process.stdout.write("not-this-job")}' "$id" <<<"$out")
    case "$status" in
      succeeded) echo "$out"; return 0 ;;
      failed) echo "$out"; echo "job $id failed" >&2; return 1 ;;
      not-this-job) [ -z "$out" ] || { echo "GET /admin/jobs/$id did not answer with that job's record; giving up" >&2; return 1; } ;;
    esac
    if [ $SECONDS -ge $deadline ]; then echo "job $id still $status after ${timeout}s" >&2; return 1; fi
    sleep 2
  done
}

json_field() {
  node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8"));const p=process.argv[1].split(".");let x=v;for(const k of p)x=x?.[k];process.stdout.write(x===undefined||x===null?"":String(x))' "$1"
}
