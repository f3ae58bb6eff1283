# codex-path-proxy as a container (a sidecar next to OpenClaw or Codex CLI).
#   docker build -t codex-path-proxy .
#   docker run --rm -p 127.0.0.1:8780:8780 codex-path-proxy
# Configure it with CODEX_PATH_PROXY_<SECTION>_<KEY> variables, or mount a TOML file and
# name it in CODEX_PATH_PROXY_CONFIG. tests/test_docker.py runs this file's ENTRYPOINT,
# CMD, ENV and HEALTHCHECK for real, and hadolint checks it; scripts/container builds the
# image with podman and runs it (tests/container).

# glibc, not musl: aiohttp's C HTTP parser comes as a manylinux wheel, and the proxy
# refuses to start on the pure-Python one. Both stages share it, so the venv's
# interpreter path is the same in each.
FROM python:3.12.14-slim-bookworm AS base

FROM base AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
# A venv without pip: the builder's own pip installs into it, so the final image gets the
# package and its runtime dependencies only. All of them come as binary wheels: no compiler.
RUN python -m venv --without-pip /opt/codex-path-proxy \
    && pip --python /opt/codex-path-proxy/bin/python install --no-cache-dir --only-binary=:all: .

FROM base
# Where the source lives: pass --build-arg SOURCE_URL=https://… (the project has no public
# address yet).
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="codex-path-proxy" \
      org.opencontainers.image.description="Local reverse proxy that rewrites retired chatgpt.com /backend-api/responses paths to /backend-api/codex/responses, transparently and streaming" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.14-slim-bookworm"
# Not "proxy": every Debian-based image already has that user and group (id 13).
RUN groupadd --system --gid 10001 codexproxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin codexproxy
COPY --from=builder /opt/codex-path-proxy /opt/codex-path-proxy
# Inside a container the proxy must listen beyond its own loopback to be reachable at all;
# publish it on the host's loopback only (-p 127.0.0.1:8780:8780). JSON logs: one line
# per request for the log collector. Bytecode was compiled at install time; a read-only
# root filesystem gets no new files.
ENV PATH="/opt/codex-path-proxy/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CODEX_PATH_PROXY_LISTEN_HOST=0.0.0.0 \
    CODEX_PATH_PROXY_LOG_FORMAT=json
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8780
# The proxy is PID 1 (exec form, no shell): SIGTERM reaches it, and it drains in-flight
# streams for shutdown.grace (30 s) before exiting 0. Give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
# Standard library only (the image has no curl). No proxy variables: 127.0.0.1 is local.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/_proxy/healthz' % os.environ.get('CODEX_PATH_PROXY_LISTEN_PORT', '8780'), timeout=4)"]
ENTRYPOINT ["codex-path-proxy"]
CMD ["serve"]
