#!/usr/bin/env bash
# `npm run image:smoke`: builds the API image with podman (chroot isolation: no container runtime
# needed) and starts it: the image's own `node dist/migrate.js` against a scratch database, then
# `node dist/server.js` as the image's user with its environment, on the host network (buildah run
# --isolation chroot; podman run's OCI runtime cannot start containers on a machine with hybrid
# cgroups). Checks readiness, a Prisma query, /metrics only on METRICS_PORT, that no dev-only
# package is in the image, and a clean exit on SIGTERM; prints the sizes.
# NODE_IMAGE: the base; where Docker Hub cannot be reached, a stand-in built from the host's Node
# (scripts/image/node-base-from-host.sh) is used instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=localhost/sav3-api:smoke
base="${NODE_IMAGE:-node:24-bookworm-slim}"
if [ -z "${NODE_IMAGE:-}" ] && ! podman pull -q "docker.io/library/$base" >/dev/null 2>&1; then
  echo "image: docker.io/library/$base cannot be pulled here; using a stand-in built from the host's Node"
  base="$(bash scripts/image/node-base-from-host.sh | cut -d' ' -f1)"
fi
echo "image: building $tag on $base"
podman build --isolation=chroot --build-arg NODE_IMAGE="$base" -t "$tag" . >/tmp/sav3-image-build.log 2>&1 || { tail -30 /tmp/sav3-image-build.log; exit 1; }

db="sav3_image_$$"
free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
redis_port="$(free_port)"; api_port="$(free_port)"; metrics_port="$(free_port)"
work="$(mktemp -d)"
ctr="$(buildah from "$tag")"
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  buildah rm "$ctr" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --daemonize yes --pidfile "$work/redis.pid" >/dev/null
url="postgresql://postgres@127.0.0.1:5432/$db"

mnt="$(buildah mount "$ctr")"
! [ -e "$mnt/app/node_modules/prisma" ] || { echo "image: the Prisma CLI is in the image" >&2; exit 1; }
! [ -e "$mnt/app/node_modules/typescript" ] || { echo "image: typescript is in the image" >&2; exit 1; }
echo "image: node_modules $(du -sm "$mnt/app/node_modules" | cut -f1) MB, dist $(du -sm "$mnt/app/dist" | cut -f1) MB"
buildah umount "$ctr" >/dev/null

buildah run --isolation chroot -e DATABASE_URL="$url" "$ctr" -- node dist/migrate.js
buildah run --isolation chroot -e DATABASE_URL="$url" -e REDIS_URL="redis://127.0.0.1:$redis_port" \
  -e MEDIA_PRIMARY_ENDPOINT=http://127.0.0.1:9 -e PORT="$api_port" -e METRICS_PORT="$metrics_port" -e HOST=127.0.0.1 \
  "$ctr" -- node dist/server.js >"$work/server.log" 2>&1 &
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$api_port/health/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
server_pid="$(grep -o '"pid":[0-9]*' "$work/server.log" | head -1 | cut -d: -f2)"
check() { # name expected-status url
  local status; status="$(curl -s -o /dev/null -w '%{http_code}' "$3")"
  [ "$status" = "$2" ] || { echo "image: $1 answered $status, expected $2"; tail -20 "$work/server.log"; exit 1; }
  echo "image: $1 $status"
}
check "/health/ready" 200 "http://127.0.0.1:$api_port/health/ready"
check "/media?limit=1 (Prisma)" 200 "http://127.0.0.1:$api_port/media?limit=1"
check "/metrics on PORT" 404 "http://127.0.0.1:$api_port/metrics"
check "/metrics on METRICS_PORT" 200 "http://127.0.0.1:$metrics_port/metrics"
kill -TERM "$server_pid"
for _ in $(seq 1 40); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.25; done
! kill -0 "$server_pid" 2>/dev/null || { echo "image: still running 10 s after SIGTERM"; exit 1; }
grep -q '"msg":"stopped"' "$work/server.log" || { echo "image: no clean stop in the log"; exit 1; }
server_pid=
echo "image: stopped cleanly on SIGTERM"
echo "image: $tag $(podman image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}') (base $base $(podman image inspect "$base" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
