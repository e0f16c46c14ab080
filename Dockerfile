# genbot's image: `genbot` as the entrypoint, so the command is the subcommand (bot, worker, migrate).
# Built from this checkout (README, "Deployment"); compose.yaml builds it as genbot:local.
#
#   docker build -t genbot .
#   docker build --build-arg EXTRAS=discord,postgres -t genbot .   # fewer extras, a smaller image

ARG PYTHON_VERSION=3.12

# -- build: genbot and its dependencies into a venv, from wheels (no compiler needed on x86-64 or arm64)
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG EXTRAS=discord,slack,postgres,openai,sentry,otel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/genbot
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest out of the context)
COPY pyproject.toml README.md ./
COPY bot bot
COPY adapters adapters
COPY jobs jobs
COPY storage storage
RUN /opt/genbot/bin/pip install ".[${EXTRAS}]"

# -- run: the venv, a user of its own, no build tools and no sources
FROM python:${PYTHON_VERSION}-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/genbot --create-home \
        --shell /usr/sbin/nologin genbot
COPY --from=build /opt/genbot /opt/genbot
ENV PATH=/opt/genbot/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER genbot
# Relative paths in the settings (a SQLite file, GENBOT_BLOBS__DIR) land here; on PostgreSQL
# nothing is written to disk.
WORKDIR /var/lib/genbot
ENTRYPOINT ["genbot"]
CMD ["--help"]
