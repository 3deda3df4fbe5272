#!/usr/bin/env bash
# Brings a fresh machine of the project's kind to the point where the stack and the tests run:
# npm packages, the generated Prisma client, promtool, and the local PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
# Incidents: a real Alertmanager (and amtool) and headless Chromium for the status page test.
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt-get)"
    apt-get update -qq >/dev/null
    # sort -u: promtool and the server come in one package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
  else
    echo "setup: missing ${need_apt[*]}; install with: sudo apt-get install ${need_apt[*]}" >&2
  fi
fi

# PostgreSQL and Redis normally run already (this kind of machine starts them); start them if not.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "setup: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; then
  echo "setup: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

npm run --silent generate >/dev/null

# The topology test (test/topology): the programs of the compose stack that Debian packages. The
# test starts its own instances on free ports; daemons the packages may start are not used.
need_topology=()
for pair in pgbackrest:pgbackrest pgbouncer:pgbouncer prometheus-alertmanager:prometheus-alertmanager \
  prometheus-postgres-exporter:prometheus-postgres-exporter prometheus-redis-exporter:prometheus-redis-exporter; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need_topology+=("${pair##*:}")
done
if [ "${#need_topology[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_topology[*]} (apt-get)"
    for attempt in 1 2 3 4 5 6; do
      # Another apt-get may hold the dpkg lock for a while: retry.
      if apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_topology[@]}" >/dev/null; then break; fi
      [ "$attempt" = 6 ] && { echo "setup: could not install ${need_topology[*]}" >&2; exit 1; }
      sleep 10
    done
  else
    echo "setup: missing ${need_topology[*]}; install with: sudo apt-get install ${need_topology[*]}" >&2
  fi
fi
