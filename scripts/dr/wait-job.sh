#!/usr/bin/env bash
# Shared by the backup scripts: polls GET /admin/jobs/<id> until the job finishes; prints it and
# exits 0 when it succeeded, 1 when it failed. (Sourced; uses lib.sh's sav3_call.)
sav3_wait_job() {
  local id=$1 timeout=${2:-3600} out status
  local deadline=$((SECONDS + timeout))
  while :; do
    out=$(sav3_call GET "/admin/jobs/$id" 2>/dev/null) || true
    status=$(node -e 'try{process.stdout.write(JSON.parse(require("fs").readFileSync(0,"utf8")).status||"")}catch{}' <<<"$out")
    case "$status" in
      succeeded) echo "$out"; return 0 ;;
      failed) echo "$out"; echo "job $id failed" >&2; return 1 ;;
    esac
    if [ $SECONDS -ge $deadline ]; then echo "job $id still $status after ${timeout}s" >&2; return 1; fi
    sleep 2
  done
}

json_field() {
  node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8"));const p=process.argv[1].split(".");let x=v;for(const k of p)x=x?.[k];process.stdout.write(x===undefined||x===null?"":String(x))' "$1"
}
