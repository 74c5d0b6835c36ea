"""A real Celery worker process, woken through a real Redis broker, runs the demo job."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runs.models import Run, RunStatus
from runs.services.runs import run_create
from tests.conftest import REPO
from tests.workers import celery_broker, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _worker(redis_url: str, tmp_path: Path, queues: str) -> Iterator[subprocess.Popen]:
    log = (tmp_path / "worker.log").open("w")
    with celery_broker(redis_url):
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlroom", "worker", "--loglevel", "INFO", "--concurrency",
             "2", "--queues", queues, "--hostname", f"test-{queues}@%h", "--without-gossip", "--without-mingle"],
            cwd=REPO, env=worker_env(broker_url=redis_url, data_dir=tmp_path / "worker-data"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        yield proc
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


@pytest.fixture
def worker(redis_server_url: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    yield from _worker(redis_server_url, tmp_path, "default")


@pytest.fixture
def sql_worker(redis_server_url: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A worker that consumes only the SQL editor's queue, as compose's sql-worker does."""
    yield from _worker(redis_server_url, tmp_path, "sql")


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
    assert workers and all(w.startswith("celery@") for w in workers)
    assert "runs.tasks.phase_execute" in log_tail and "succeeded in" in log_tail
    assert Run.objects.get(pk=run.pk).artifacts.get().name == "gold_revenue_by_country.csv"


def test_sql_queries_reach_a_worker_of_the_sql_queue_through_redis(world, sql_worker, tmp_path):
    from connections.models import Connection
    from sqlwarehouse.execution import query_submit

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = query_submit(access=world.access("analyst"), connection=connection,
                             sql="SELECT 42 AS answer, 12345678901234.56::DECIMAL(18,2) AS d")
    assert execution.status == "queued"  # submitting returned before anything ran
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not execution.is_terminal and sql_worker.poll() is None:
        time.sleep(0.2)
        execution.refresh_from_db()
    log_tail = (tmp_path / "worker.log").read_text()[-3000:]
    assert execution.status == "succeeded", f"{execution.status}: {execution.error}\n{log_tail}"
    assert execution.rows == [[42, "12345678901234.56"]] and execution.manifest["rows"] == 1
    assert "sqlwarehouse.tasks.query_execute" in log_tail
