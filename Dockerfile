# syntax=docker/dockerfile:1
# Control Room application image (web, worker, beat and migrate all run it).
# The default target (the last stage) is this image; `--target spark` adds the JDK 17, pyspark and
# the Spark jars (compose's spark-worker and Spark services, see compose/README.md "Spark").
FROM python:3.11-slim-bookworm AS app

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

# dbt's own virtualenv (dbt phases; its pins are not the app's), installed from its lock at build
# time so workers never install it at run time: only the lock and the installer are copied in, so
# this layer is rebuilt only when the lock changes.
COPY requirements-dbt.lock /app/requirements-dbt.lock
COPY lakehouse/phases/dbt/env.py /app/lakehouse/phases/dbt/env.py
RUN CONTROLROOM_CACHE_DIR=/opt/controlroom/cache PIP_NO_CACHE_DIR=1 python /app/lakehouse/phases/dbt/env.py
ENV CONTROLROOM_CACHE_DIR=/opt/controlroom/cache

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

# --- Spark -----------------------------------------------------------------------------------------
# The pinned Spark jars (lakehouse/spark/jars/pom.xml), fetched with Maven at build time and checked
# against checksums.txt by the app's own code, into a cache the containers only read: they start
# without Maven or network, and an image always holds the jars of its own pom. Only the runtime
# module and the pom are copied in, so a code change does not refetch them.
FROM python:3.11-slim-bookworm AS spark-jars
# The man folder: openjdk's postinst fails without it on slim images.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install --yes --no-install-recommends maven openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY lakehouse/__init__.py lakehouse/__init__.py
COPY lakehouse/spark/__init__.py lakehouse/spark/runtime.py lakehouse/spark/
COPY lakehouse/spark/jars lakehouse/spark/jars
RUN CONTROLROOM_CACHE_DIR=/opt/controlroom/cache python -m lakehouse.spark.runtime

# The application with Spark: JDK 17 (the one Spark 4.1 runs on), pyspark and delta-spark
# (requirements-spark.lock; pyspark ships spark-submit and spark-class), and the jars above.
FROM app AS spark
USER root
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install --yes --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
# pyspark is a 456 MB sdist: keep its built wheel in BuildKit's cache across code changes.
RUN --mount=type=cache,target=/root/.cache/pip pip install --require-hashes -r requirements-spark.lock
COPY --from=spark-jars /opt/controlroom/cache /opt/controlroom/cache
ENV CONTROLROOM_CACHE_DIR=/opt/controlroom/cache
USER controlroom

# The default target: the application image as above, without Spark.
FROM app
