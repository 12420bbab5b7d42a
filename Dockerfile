# Backfill worker image: the same image runs the demo seed and the real backfill.
# Build: docker build -t backfill-worker .   Run: see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fresh CA certificates: without them slim images fail the TLS handshake with MongoDB Atlas
# (seed 004: "SSL handshake failed ... TLSV1_ALERT_INTERNAL_ERROR"), and hosted Postgres with
# DB_SSLMODE=verify-full needs them too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY utils/ utils/
COPY worker/ worker/

# Non-root: the worker needs no privileges. Numeric so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 backfill \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin backfill \
    && mkdir /data && chown 10001:10001 /data   # a named volume mounted here starts as the worker's
USER 10001:10001

# SIGTERM and SIGINT blocked until the worker's first line takes them (worker/__main__.py): a
# stop in the tens of milliseconds Python takes to start waits for it instead of killing it.
CMD ["env", "--block-signal=TERM", "--block-signal=INT", "python", "-m", "worker"]
