# supportbot: a slim, non-root image that runs `supportbot run` (README, "Production").
#   docker build -t supportbot .
#   docker run --env-file .env -p 127.0.0.1:8080:8080 supportbot
# The wheel is built in a first stage, so the image holds no compiler, no sources and no cache.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY supportbot supportbot
COPY tickets tickets
COPY accounts accounts
COPY bot bot
COPY mail mail
COPY sandbox sandbox
COPY templates templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_LISTEN=0.0.0.0:8080 \
    DATABASE_URL=sqlite:////data/supportbot.db
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home supportbot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER supportbot
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# Liveness on the operator's port; the slim image has no curl, Python's urllib does the same.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['HTTP_LISTEN'].rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# SIGTERM stops the service cleanly (finishes sends in flight); give it time before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["supportbot", "run"]
