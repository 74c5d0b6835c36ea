# syntax=docker/dockerfile:1
# Control Room application image (web, worker, beat and migrate all run it).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fixed uid/gid so bind-mounted secrets and volumes have predictable ownership.
RUN groupadd --system --gid 10001 controlroom \
 && useradd --system --uid 10001 --gid controlroom --home-dir /app --shell /usr/sbin/nologin controlroom \
 && mkdir -p /app /data/artifacts \
 && chown -R controlroom:controlroom /app /data

WORKDIR /app

# Dependencies first so this layer is cached until the lock file changes.
COPY requirements.lock /app/requirements.lock
RUN pip install --no-cache-dir -r requirements.lock

COPY --chown=controlroom:controlroom . /app

ENV CONTROLROOM_MODE=production \
    CONTROLROOM_DATA_DIR=/data \
    STATIC_ROOT=/app/staticfiles

USER controlroom

# collectstatic needs no secret, but production-mode settings refuse to load
# without a >=50-char SECRET_KEY, DATABASE_URL and CELERY_BROKER_URL. The values
# below are throwaway and exist only for this RUN line; nothing is connected to.
# At runtime the key comes from SECRET_KEY_FILE (a compose secret).
# STATIC_ROOT lives in the image (not on the /data volume) so an upgraded image
# serves its own static files.
RUN SECRET_KEY=build-only-collectstatic-not-a-secret-0123456789abcdef \
    DATABASE_URL=postgres://build:build@build.invalid:5432/build \
    CELERY_BROKER_URL=redis://build.invalid:6379/0 \
    python manage.py collectstatic --noinput

EXPOSE 8000

# Threads, and a timeout above the executor contract's longest long-poll (claim wait <= 30 s):
# a sync worker would be busy (and killed at 30 s) for the whole wait of one claim.
CMD ["gunicorn", "controlroom.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", \
     "--timeout", "75", "--access-logfile", "-"]
