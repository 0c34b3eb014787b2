# podpatterns webhook image: `podpatterns serve` on HTTPS :8443, as UID 10001.
# Build: docker build -t podpatterns:dev .
# tests/test_dockerfile.py lints this file and runs its wheel build and install steps in a venv.

# BASE: an image with Python 3.11, pip, groupadd and useradd (tests/node builds over its own Debian one).
# PIP_NO_INDEX, PIP_FIND_LINKS: unset, pip installs from PyPI; PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels makes
# it install offline from a wheelhouse mounted there. ARGs are in the environment of RUN steps and pip
# reads PIP_* from there, so no RUN line names them.
ARG BASE=python:3.11-slim

# --- build: turn the source tree into a wheel (pure Python, so no compiler is needed) ---
FROM ${BASE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel --no-cache-dir --no-deps -w /dist .

# --- runtime: the wheel and its dependencies, nothing else (no source tree, no build tools) ---
FROM ${BASE}
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PODPATTERNS_HOST=0.0.0.0 \
    PODPATTERNS_PORT=8443
COPY --from=build /dist /dist
# --only-binary: every dependency must come as a wheel, so the build fails rather than look for a
# compiler the slim image does not have. The user exists so logs and `id` show a name; the chart
# relies on the numeric UID (runAsNonRoot can only check numbers).
RUN pip install --no-cache-dir --only-binary=:all: /dist/*.whl \
    && rm -rf /dist \
    && groupadd --gid 10001 podpatterns \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin podpatterns
USER 10001:10001
# /mutate, /healthz, /readyz and /metrics, all HTTPS. Certificates and config are mounted by the
# chart at /etc/podpatterns/tls and /etc/podpatterns/config.
EXPOSE 8443
ENTRYPOINT ["podpatterns", "serve"]
