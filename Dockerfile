# syntax=docker/dockerfile:1
# SAV3 DR API. Build: docker build -t sav3-api .
# The Prisma client is generated at build time; nothing is downloaded when the container starts.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no install script may download an engine; the client needs none.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json prisma.config.ts ./
COPY prisma ./prisma
COPY scripts/prisma-engine-stub.sh ./scripts/
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional as well: the Prisma CLI (with its engines and Studio) is an optional peer of
# @prisma/client, which npm installs as "devOptional" despite --omit=dev (361 MB instead of 113).
# The generated client loads only the PostgreSQL query compiler: the other databases' compilers and
# the source maps go too (about 60 MB).
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force \
 && find node_modules/@prisma/client/runtime -maxdepth 1 -type f \
      \( -name '*.map' -o -name 'wasm-compiler-edge*' -o \( -name 'query_compiler_*' ! -name 'query_compiler_fast_bg.postgresql.*' \) \) -delete \
 && test ! -e node_modules/prisma && test -e node_modules/@prisma/client/runtime/query_compiler_fast_bg.postgresql.js

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production PORT=3000
WORKDIR /app
COPY --from=prod-deps --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
COPY --chown=root:root package.json ./
COPY --chown=root:root prisma/migrations ./prisma/migrations
# The DR state file lives on a volume the unprivileged user can write (compose mounts one per instance).
RUN mkdir -p /var/lib/sav3 && chown node:node /var/lib/sav3
ENV DR_STATE_FILE=/var/lib/sav3/dr-state.json
# The code is root-owned and read-only to the process, which runs as the unprivileged `node` user.
USER node
EXPOSE 3000
# Liveness without curl: Node's own fetch against /health/live.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM from `docker stop` directly; the service drains
# and exits 0 within SHUTDOWN_TIMEOUT_MS (keep docker's stop timeout above it).
STOPSIGNAL SIGTERM
CMD ["node", "dist/server.js"]
