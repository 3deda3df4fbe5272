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
      let j; try { j = JSON.parse(s); } catch { j = undefined; }
      // A proxy page or an empty 200 is not the API having acted (or checked): never success.
      if (typeof j !== "object" || j === null || Array.isArray(j)) {
        process.stderr.write("the answer is not the API'"'"'s (not a JSON object): nothing is known to have been done\n");
        process.exit(1);
      }
      const failed = (j.checks || []).filter((c) => c.ok === false || c.status === "fail");
      if (j.dryRun && (failed.length > 0 || j.wouldPromote === false)) {
        process.stderr.write("dry run: checks failed: " + failed.map((c) => c.name).join(", ") + "\n");
        process.exit(1);
      }
    });'
}

# Jobs (GET /admin/jobs/<id>). A job's id is a UUID; its record carries that id, the kind it was
# started as and one of these statuses. Anything else is not that job: it is never followed.
SAV3_JOB_ID_RE='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
# Reads an answer on stdin. `start KIND`: the answer to the request that started a job; prints its
# id. `record KIND ID`: a poll's answer; prints the status. Exit 1 with the reason otherwise.
SAV3_JOB_CHECK='
const [mode, kind, id] = process.argv.slice(1);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const STATUSES = ["queued", "running", "succeeded", "failed"];
const text = require("fs").readFileSync(0, "utf8");
let v;
try { v = JSON.parse(text); } catch { v = undefined; }
const obj = (x) => typeof x === "object" && x !== null && !Array.isArray(x);
const fail = (m) => { process.stderr.write(m + "\n"); process.exit(1); };
const shown = (x) => (x === undefined ? "none" : JSON.stringify(x).slice(0, 80));
if (mode === "start") {
  const j = obj(v) ? v.job : undefined;
  if (!obj(j) || typeof j.id !== "string" || !UUID.test(j.id))
    fail("the API\x27s answer names no job (job.id missing or not a UUID): nothing started that can be followed");
  if (j.kind !== kind) fail("the API\x27s answer names job " + j.id + " of kind " + shown(j.kind) + ", not the " + kind + " job this script started: not followed");
  if (!STATUSES.includes(j.status)) fail("the API\x27s answer names job " + j.id + " with status " + shown(j.status) + ", not a job status: not followed");
  process.stdout.write(j.id);
} else {
  const what = "GET /admin/jobs/" + id;
  if (!obj(v)) fail(what + " answered " + (text.trim() === "" ? "an empty body" : "something that is not a JSON object") + ", not the job\x27s record; giving up");
  if (v.id !== id) fail(what + " did not answer with that job\x27s record (its id is " + shown(v.id) + "); giving up");
  if (v.kind !== kind) fail(what + " answered a job of kind " + shown(v.kind) + ", not the " + kind + " job this script started; giving up");
  if (!STATUSES.includes(v.status)) fail(what + " answered the job\x27s record without a job status (status " + shown(v.status) + "); giving up");
  process.stdout.write(v.status);
}'

# The id of the job a start answer (stdin) names, checked against the kind the caller started.
sav3_started_job() {
  node -e "$SAV3_JOB_CHECK" start "$1"
}

# Polls GET /admin/jobs/<id> until the job of kind KIND finishes; prints it and returns 0 when it
# succeeded, 1 when it failed, ran past TIMEOUT seconds (default 3600) or the answer was not its
# record (malformed, another job, another kind, no status: given up at once, never polled on).
#   sav3_wait_job ID KIND [TIMEOUT]
sav3_wait_job() {
  local errors rc=0
  errors=$(mktemp)
  _sav3_wait_job "$errors" "$@" || rc=$?
  rm -f "$errors"
  return "$rc"
}
_sav3_wait_job() {
  local errors=$1 id=$2 kind=$3 timeout=${4:-3600} out status http misses=0 rc
  local deadline=$((SECONDS + timeout))
  if ! [[ "$id" =~ $SAV3_JOB_ID_RE ]]; then echo "the API's answer names no job (job.id missing or not a UUID): nothing started that can be followed" >&2; return 1; fi
  while :; do
    rc=0
    out=$(sav3_call GET "/admin/jobs/$id" 2>"$errors") || rc=$?
    if [ "$rc" -eq 0 ]; then
      misses=0
      status=$(node -e "$SAV3_JOB_CHECK" record "$kind" "$id" <<<"$out") || return 1
      case "$status" in
        succeeded) echo "$out"; return 0 ;;
        failed) echo "$out"; echo "job $id failed" >&2; return 1 ;;
      esac
    else
      # Only what may heal is retried: the API unreachable or restarting (no answer in time, 5xx),
      # and not more than 5 polls in a row (each bounded). A 4xx (job unknown, token refused) is final.
      http=$(sed -n 's/^HTTP \([0-9][0-9]*\)$/\1/p' "$errors" | tail -n 1)
      if [ "$rc" -ne 3 ] && [[ "$http" != 5?? ]]; then
        [ -z "$out" ] || echo "$out"
        echo "GET /admin/jobs/$id answered ${http:+HTTP }${http:-an error}; giving up (the job may still run)" >&2
        return 1
      fi
      misses=$((misses + 1))
      if [ "$misses" -ge 5 ]; then echo "job $id: the API did not answer 5 polls in a row (${SAV3_API_URL}); the job may still run: GET /admin/jobs/$id" >&2; return 1; fi
      status=${status:-unknown}
    fi
    if [ $SECONDS -ge $deadline ]; then echo "job $id still $status after ${timeout}s" >&2; return 1; fi
    sleep 2
  done
}

json_field() {
  node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8"));const p=process.argv[1].split(".");let x=v;for(const k of p)x=x?.[k];process.stdout.write(x===undefined||x===null?"":String(x))' "$1"
}
