#!/usr/bin/env bash
# Where Docker Hub cannot be reached (this development machine), builds a local stand-in for the
# Dockerfile's NODE_IMAGE from the host's own Node.js and npm: the node and sh binaries with the
# shared libraries they load, npm, CA certificates and a `node` user (uid 1000, as in the official
# image). The host's CA bundle goes in, and Node is told to use it (NODE_EXTRA_CA_CERTS), so that
# `npm ci` works behind a TLS-intercepting egress proxy as it does on the host. Usage: bash scripts/image/node-base-from-host.sh [tag]  (default localhost/sav3-node-base:host)
set -euo pipefail
tag="${1:-localhost/sav3-node-base:host}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

copy() { # copies a file with its parent directories, following symlinks
  mkdir -p "$root$(dirname "$1")"
  cp -L "$1" "$root$1"
}
node_bin="$(command -v node)"
npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
# sh and the few tools the Dockerfile's RUN steps use, as node:*-bookworm-slim has them.
for bin in "$node_bin" /bin/sh /usr/bin/env /usr/bin/find /usr/bin/rm /usr/bin/ls /usr/bin/cat /usr/bin/mkdir /usr/bin/cp /usr/bin/du; do
  copy "$(readlink -f "$bin")"
  [ "$(readlink -f "$bin")" = "$bin" ] || { mkdir -p "$root$(dirname "$bin")"; ln -sf "$(readlink -f "$bin")" "$root$bin"; }
  for lib in $(ldd "$(readlink -f "$bin")" | grep -o '/[^ ]*'); do copy "$lib"; done
done
mkdir -p "$root/usr/local/bin" "$root/usr/lib/node_modules" "$root/tmp" "$root/etc/ssl/certs" "$root/home/node"
ln -sf "$node_bin" "$root/usr/local/bin/node"
cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
ln -sf /usr/lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' > "$root/etc/group"
chown 1000:1000 "$root/home/node"
tar -C "$root" -c . | podman import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["node"]' - "$tag" >/dev/null
echo "$tag ($("$node_bin" --version))"
