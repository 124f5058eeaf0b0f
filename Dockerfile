# storj-registry: the push side of a registry whose images live in a Storj bucket.
#
#   docker build -t storj-registry .
#   docker run --read-only --tmpfs /tmp -v registry-staging:/var/lib/storj-registry/staging \
#     -e REGISTRY_STORAGE=s3 -e REGISTRY_S3_BUCKET=... -e REGISTRY_S3_ACCESS_KEY=... \
#     -e REGISTRY_S3_SECRET_KEY=... -e REGISTRY_PUBLIC_URL=https://registry.example.com \
#     -p 5000:5000 storj-registry
#
# Configuration comes only from REGISTRY_* environment variables (see docs/kubernetes.md).

# Both stages must use the same interpreter: the virtual environment's python is a symlink into it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# Builder: resolve and install the application into /opt/venv. Nothing of this stage but the venv
# reaches the final image.
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

# The venv gets no pip of its own; the builder's pip installs into it (pip --python).
RUN python -m venv --without-pip /opt/venv

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that editing the code does not re-resolve them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip --python /opt/venv/bin/python install --no-cache-dir --requirement requirements.txt

# Then the application itself, as a regular (non-editable) install with its console script.
COPY README.md ./
COPY app ./app
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -c "import app" \
    && test -x /opt/venv/bin/storj-registry

# ---------------------------------------------------------------------------------------------------
# Runtime: the interpreter, the venv, an unprivileged user and two writable directories.
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="storj-registry" \
      org.opencontainers.image.description="Push images into a Storj bucket laid out for static docker pulls" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid "${APP_GID}" registry \
    && useradd --uid "${APP_UID}" --gid registry --no-create-home \
        --home-dir /var/lib/storj-registry --shell /usr/sbin/nologin registry \
    && mkdir -p /var/lib/storj-registry/staging /var/lib/storj-registry/data \
    && chown -R "${APP_UID}:${APP_GID}" /var/lib/storj-registry \
    && chmod 0750 /var/lib/storj-registry /var/lib/storj-registry/staging /var/lib/storj-registry/data

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/storj-registry \
    REGISTRY_STAGING_DIR=/var/lib/storj-registry/staging \
    REGISTRY_DATA_DIR=/var/lib/storj-registry/data \
    REGISTRY_LISTEN_HOST=0.0.0.0 \
    REGISTRY_LISTEN_PORT=5000

WORKDIR /var/lib/storj-registry
USER ${APP_UID}:${APP_GID}

EXPOSE 5000

# `storj-registry healthcheck` asks /healthz on the port `serve` really listens on: the --port of PID 1 when
# given (docker run IMAGE serve --port 8080), else REGISTRY_LISTEN_PORT; over HTTPS when REGISTRY_TLS_CERT is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["storj-registry", "healthcheck"]

ENTRYPOINT ["storj-registry"]
CMD ["serve"]
