# One image for the five driftloop services; `docker compose` picks the service with
# `command: ["run", "<service>"]`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DRIFTLOOP_HOME=/var/lib/driftloop

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
RUN pip install . \
    && useradd --system --create-home --home-dir /var/lib/driftloop --uid 10001 driftloop \
    && rm -rf /src

USER driftloop
WORKDIR /var/lib/driftloop
EXPOSE 8000
ENTRYPOINT ["driftloop"]
CMD ["run", "gateway"]
