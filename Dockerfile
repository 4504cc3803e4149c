# syntax=docker/dockerfile:1
#
# octorelay production image.
#
#   docker build -t octorelay .
#   docker run --rm --stop-timeout 35 \
#     -e AWS_REGION=eu-west-1 \
#     -e OCTORELAY_CONFIG=/etc/octorelay/config.json \
#     -v "$PWD/config.json:/etc/octorelay/config.json:ro" \
#     -v "$PWD/my-handlers:/app/handlers:ro" \
#     octorelay
#
# The image declares no queues: the config you mount names yours (it refuses to start without).
#
# Stages: build (all deps + tsc) -> prod-deps (runtime deps only) -> runtime.
# The runtime stage contains only dist/ (without the development commands),
# production node_modules, package.json, config/, handlers/ and the `octorelay`
# launcher (bin/, scripts/ensure-node.mjs).
#
# Base image: Node 24 on Debian slim. The Debian codename is spelled out so the
# image does not silently change distro when the `slim` alias moves to the next
# Debian release; override with --build-arg NODE_IMAGE=node:24-bookworm-slim if
# needed. For byte-for-byte reproducible builds pin a digest here
# (node:24-trixie-slim@sha256:...) and let a bot (Renovate/Dependabot) bump it.
ARG NODE_IMAGE=node:24-trixie-slim

# ---------------------------------------------------------------------------
# build: install every dependency from the lockfile and compile src/ -> dist/
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app

COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# demo and try run the embedded emulator (fauxqs, a devDependency): development commands, left out
# of the image; `octorelay demo` there says in one line that it needs the development install.
RUN npm run build \
 && rm -rf dist/dev

# ---------------------------------------------------------------------------
# prod-deps: production dependencies only, no lifecycle scripts
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app

COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

# tini as PID 1: forwards SIGTERM/SIGINT to node and reaps zombies, so the
# service's graceful drain runs on `docker stop` / pod termination.
# (Alternative without tini: `docker run --init` / compose `init: true`.)
# Not version-pinned: the Debian release is fixed by the base image tag, and
# pinning an exact Debian revision breaks the build as soon as the archive
# ships a security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

ENV NODE_ENV=production \
    OCTORELAY_HANDLERS_DIR=/app/handlers

WORKDIR /app

# Application files stay owned by root and are read-only for the runtime user.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
COPY handlers ./handlers
# The `octorelay` command (start, replay, traffic, help): bin/octorelay.mjs runs dist/cli.js here.
COPY bin ./bin
COPY scripts/ensure-node.mjs ./scripts/ensure-node.mjs
RUN ln -s /app/bin/octorelay.mjs /usr/local/bin/octorelay

# Handler modules: mount point for operators' own handlers.
# Mount a directory over /app/handlers (read-only is fine), e.g.
#   docker run -v "$PWD/my-handlers:/app/handlers:ro" octorelay
# or point OCTORELAY_HANDLERS_DIR elsewhere. Keeping the directory under /app
# matters: handlers resolve bare imports from /app/node_modules and take
# "type": "module" from /app/package.json (.ts handlers are type-stripped by
# Node 24). Handlers import the contract as "octorelay/handler" wherever they
# are mounted: the worker resolves it to /app/dist/handler-contract.js.
# Deliberately no `VOLUME` instruction: an anonymous volume would shadow the
# handlers baked into a newer image (compose reuses anonymous volumes when it
# recreates a container), so handler updates would silently not take effect.
LABEL org.opencontainers.image.title="octorelay" \
      org.opencontainers.image.description="Drains SQS queues through worker-thread handlers and delivers per-partner batches to S3" \
      org.opencontainers.image.licenses="MIT" \
      octorelay.handlers-dir="/app/handlers"

# `node` (uid/gid 1000) ships with the official image. Numeric form so that
# Kubernetes `runAsNonRoot: true` can verify it.
USER 1000:1000

# --- Metrics / health (HTTP server on 9464, GET /healthz) -------------------
# Change the port or path here if the service's metrics server moves.
# Uses Node's built-in fetch: slim images have no curl/wget.
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# ---------------------------------------------------------------------------

# Shutdown: on SIGTERM the service drains within OCTORELAY_SHUTDOWN_DEADLINE_MS
# (default 25 s) and exits 0; its own last-resort exit comes 5 s later (30 s).
# Docker's default stop timeout is only 10 s, so give the container more time
# than that: `docker run --stop-timeout 35`, compose `stop_grace_period: 35s`,
# Kubernetes `terminationGracePeriodSeconds: 35` (its default, 30, is too short).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]
CMD ["node", "dist/main.js"]
