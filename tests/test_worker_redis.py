"""A real Celery worker process, woken through a real Redis broker, runs the demo job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from controlroom.celery import app as celery_app
from runs.models import Run, RunStatus
from runs.services.runs import run_create
from tests.conftest import REPO
from tests.servers import REDIS_VAR, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The suite's Redis (from `python -m tests.servers --redis`) or one of our own."""
    if os.environ.get(REDIS_VAR):
        yield os.environ[REDIS_VAR]
        return
    with RedisServer() as url:
        yield url


@pytest.fixture
def celery_via_redis(redis_url: str) -> Iterator[str]:
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = redis_url
    celery_app._after_fork()  # drop pooled connections so the new broker URL takes effect
    yield redis_url
    celery_app.conf.broker_url = old
    celery_app._after_fork()


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def worker(celery_via_redis: str, settings, tmp_path: Path) -> Iterator[subprocess.Popen]:
    env = {
        **os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": celery_via_redis,
        "ARTIFACT_STORE_URL": settings.ARTIFACT_STORE_URL, "CONTROLROOM_WAREHOUSE_DIR": str(settings.WAREHOUSE_DIR),
        "CONTROLROOM_DATA_DIR": str(tmp_path / "worker-data"),
    }
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlroom", "worker", "--loglevel", "INFO", "--concurrency", "2",
         "--queues", "default", "--hostname", f"test-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_worker_process_runs_the_demo_job_through_redis(world, demo_job, worker, tmp_path):
    run = run_create(access=world.access("operator"), job=demo_job)  # on commit: a message to Redis
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_terminal or worker.poll() is not None:
            break
        time.sleep(0.3)
    log_tail = (tmp_path / "worker.log").read_text()[-3000:]
    assert run.status == RunStatus.SUCCEEDED, f"{run.status}: {run.error}\n{log_tail}"
    workers = set(run.phases.values_list("worker", flat=True))
    assert len(workers) >= 1 and all(w.startswith("celery@") for w in workers)
    assert "runs.tasks.phase_execute" in log_tail and "succeeded in" in log_tail
    assert Run.objects.get(pk=run.pk).artifacts.get().name == "gold_revenue_by_country.csv"
