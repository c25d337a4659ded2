# kube-metrics-recorder container image.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t kube-metrics-recorder:0.1.0 .
#
# Runs as UID/GID 65532 with nothing writable but /data (the SQLite volume) and /tmp, so it
# works under a read-only root filesystem and the restricted Pod Security Standard.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: install the package and its dependencies into a self-contained virtualenv ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/recorder
COPY pyproject.toml README.md ./
COPY migrations/ ./migrations/
COPY recorder/ ./recorder/
RUN /opt/recorder/bin/pip install --no-cache-dir --no-compile /src \
    && /opt/recorder/bin/python -m compileall -q -j 0 /opt/recorder/lib

# ---- runtime: the slim base, the virtualenv, an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kube-metrics-recorder" \
      org.opencontainers.image.description="Keeps the history of Kubernetes CPU and memory usage from the Metrics API (metrics.k8s.io) in SQLite or PostgreSQL, and serves it back." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kube-metrics-recorder/kube-metrics-recorder" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# A passwd entry for the fixed UID: libpq and getpass look the user up by UID.
RUN groupadd --system --gid 65532 recorder \
    && useradd --system --uid 65532 --gid 65532 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin recorder \
    && mkdir -p /data /var/lib/recorder/spool \
    && chown 65532:65532 /data /var/lib/recorder/spool

COPY --from=build /opt/recorder /opt/recorder

ENV PATH=/opt/recorder/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    RECORDER_DATABASE_URL=sqlite:////data/recorder.db \
    RECORDER_LISTEN=0.0.0.0:8080

WORKDIR /data
VOLUME ["/data"]
USER 65532:65532
EXPOSE 8080

# SIGTERM (Kubernetes, docker stop) is the graceful stop: finish the poll, write or spool what
# waits, exit 0 within RECORDER_SHUTDOWN_GRACE.
STOPSIGNAL SIGTERM

# No curl in the image: ask /livez with the interpreter that is already there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RECORDER_LISTEN', '0.0.0.0:8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=4)"]

ENTRYPOINT ["recorder"]
CMD ["run"]
