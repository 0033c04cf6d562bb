# syntax=docker/dockerfile:1
# The polysocket relay as a container image: `polysocket relay`, nothing else (no router, no dev tools).
#
#   docker build -t polysocket-relay .
#   docker run --rm -p 8080:8080 --ulimit nofile=1048576 --stop-timeout 45 \
#     -e POLYSOCKET_REDIS_URL=redis://HOST:6379/0 -e RELAY_DOMAIN=relay.example.com polysocket-relay
#
# Settings are POLYSOCKET_* variables (every flag of `polysocket relay --help`); arguments after the
# image name are passed on as flags. On AWS the ECS task definition in infra/ecs.tf sets them.
#
# Base image: pinned to a full patch version and Debian release, so a rebuild does not move to another
# Python. Pin the digest as well where the registry is reachable (this repository's machines reach
# none):  docker build --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: the wheel from this checkout, then polysocket[relay] from that wheel into a venv, then the
# relay's hot modules compiled by mypyc beside their installed sources (relay_node/compiled.py: 40 % less
# Python per message, 12-20 % less CPU, bench/results/relay-alone.md). `--build-arg MYPYC=0` builds the image
# interpreted; the relay's start log says which build runs. mypy stays in this stage (/opt/mypyc), and
# the build checks that the compiled modules load without it. The router's Lambda zip is never compiled.
FROM ${PYTHON_IMAGE} AS build
ARG MYPYC=1
# the same mypy as pyproject.toml's test extra pins: CI tests the build this compiler makes
ARG MYPY_VERSION=2.4.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN if [ "$MYPYC" = 1 ]; then apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY polysocket_core/ polysocket_core/
COPY polysocket_redis/ polysocket_redis/
COPY router_fn/ router_fn/
COPY relay_node/ relay_node/
COPY polysocket_cli/ polysocket_cli/
COPY client/__init__.py client/polysocket.js client/polysocket.min.js client/polysocket.d.ts client/demo.html client/
COPY scripts/compile_relay.py scripts/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/polysocket \
 && /opt/polysocket/bin/pip install "$(ls /wheels/polysocket-*.whl)[relay]" \
 && if [ "$MYPYC" = 1 ]; then \
      /opt/polysocket/bin/pip install --target /opt/mypyc "mypy==${MYPY_VERSION}" setuptools \
      && PYTHONPATH=/opt/mypyc /opt/polysocket/bin/python scripts/compile_relay.py build /src --into \
           "$(/opt/polysocket/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; fi \
 && /opt/polysocket/bin/python -m compileall -q /opt/polysocket/lib \
 && /opt/polysocket/bin/polysocket relay --help > /dev/null

# --- run ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="polysocket-relay" \
      org.opencontainers.image.description="polysocket relay node: JSONP / CORS long-polling to unmodified WebSocket servers" \
      org.opencontainers.image.licenses="MIT"
# No shell tools are added: the health check and the entrypoint are Python, stdlib only.
RUN groupadd --system --gid 10001 polysocket \
 && useradd --system --uid 10001 --gid polysocket --home-dir /var/lib/polysocket --create-home \
            --shell /usr/sbin/nologin polysocket
COPY --from=build /opt/polysocket /opt/polysocket
COPY deploy/relay/entrypoint.py /usr/local/bin/polysocket-relay-entrypoint
COPY deploy/relay/healthcheck.py /usr/local/bin/polysocket-relay-healthcheck
RUN chmod 0755 /usr/local/bin/polysocket-relay-entrypoint /usr/local/bin/polysocket-relay-healthcheck

ENV PATH=/opt/polysocket/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POLYSOCKET_HOST=0.0.0.0 \
    POLYSOCKET_PORT=8080
WORKDIR /var/lib/polysocket
USER 10001:10001
EXPOSE 8080
# The only writable places when the root file system is read-only (infra/ecs.tf mounts task storage
# here). Declared as volumes so that ECS copies them with their owner and mode (/tmp 1777,
# /var/lib/polysocket owned by 10001) instead of mounting root-owned 0755 directories.
VOLUME ["/tmp", "/var/lib/polysocket"]

# SIGTERM drains the relay: no new sockets, serve for POLYSOCKET_DRAIN_GRACE (10 s), close the sockets
# with 1001, deregister, remove its DNS records, exit 0. Give it drain grace + 30 s before SIGKILL
# (`docker run --stop-timeout`, ECS `stopTimeout`; infra/ecs.tf derives it from the grace).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["polysocket-relay-healthcheck"]
ENTRYPOINT ["polysocket-relay-entrypoint"]
CMD []
