# One image for every Python service of the command centre: the migrate and topics jobs,
# the Faust workers, the dispatcher and the console server. docker-compose.yml picks the
# module with `command: ["python", "-m", ...]`; every setting comes from the environment
# (see infra/settings.py, or run the image with no command to print the table).
# The console's map library (Leaflet), from npm, served by the console itself (no CDN).
FROM node:20-slim AS pages
WORKDIR /pages
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer, so that a code change does not reinstall them: the
# exact versions and hashes of requirements.lock (`./centre lock` writes it), setuptools included,
# so that nothing is fetched unpinned or unhashed.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Then the project itself (.dockerignore keeps .venv, .state, .git and caches out).
COPY . .
COPY --from=pages /pages/node_modules ./node_modules
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build *.egg-info

# Run as an unprivileged user; the code stays root-owned and read-only to it. The only
# writable place is STATE_DIR (logs, pids, Faust's data directory).
RUN groupadd --system --gid 10001 centre \
    && useradd --system --uid 10001 --gid centre --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin centre \
    && mkdir -p /var/lib/centre \
    && chown centre:centre /var/lib/centre

# Containers must listen on every interface, and keep state out of the source tree.
ENV HTTP_HOST=0.0.0.0 \
    STATE_DIR=/var/lib/centre

USER centre:centre

# HTTP (intake, read API, pages), WebSocket, Faust worker web.
EXPOSE 8080 8081 6066

CMD ["python", "-m", "infra.settings"]
