"""A `spark` phase under kill -9: a real Celery worker on the ``spark`` queue (PostgreSQL, Redis),
a real standalone cluster, SeaweedFS and the shared JDBC catalog. The worker is killed while its
application runs, after the application committed to both outputs; the reaper requeues the phase,
the old application is gone before the new attempt runs anything, and each table holds the
phase's rows exactly once (the new attempt adopts what the killed one committed)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse.models import TableVersion
from runs.models import TERMINAL_RUN, Phase, Run, RunEvent, RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_create
from runs.tasks import reap_expired_leases
from tests.lakehouse_helpers import lake_of, table_rows
from tests.test_spark_phase import on_cluster  # noqa: F401  (the fixture)
from tests.workers import WorkerPool, private_broker, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
LEASE_TTL_S = 4
SCRIPT = "tests.spark_scripts.commit_then_wait"


@pytest.fixture
def pool(settings, tmp_path: Path, redis_server_url: str, on_cluster) -> Iterator[WorkerPool]:  # noqa: F811
    settings.PHASE_LEASE_TTL_S = LEASE_TTL_S
    settings.RUN_STALL_S = 3
    settings.SPARK_MODULES = [*settings.SPARK_MODULES, SCRIPT]
    with private_broker(redis_server_url, 9) as broker:
        env = worker_env(broker_url=broker, data_dir=tmp_path / "worker-data", PHASE_LEASE_TTL_S=str(LEASE_TTL_S),
                         CONTROLROOM_SPARK_MODULES=",".join(settings.SPARK_MODULES))
        made = WorkerPool(env=env, log_dir=tmp_path)
        yield made
        made.close()


def wait_for(condition, *, timeout: float, what: str, pool: WorkerPool, run) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            lines = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("message", flat=True))
            raise AssertionError(f"{what}: not after {timeout:.0f} s\n" + "\n".join(lines[-30:]) + pool.logs(3000))
        reap_expired_leases()  # the beat's job: requeue what a dead worker held
        time.sleep(0.5)


def test_kill_9_of_the_worker_mid_application_requeues_and_never_duplicates(world, pool, on_cluster):  # noqa: F811
    ns = f"kill{uuid.uuid4().hex[:6]}"
    spec = (f"name: spark-kill\nparameters:\n  ns: {{type: string, default: {ns}}}\nphases:\n"
            f"  - name: transform\n    kind: spark\n    retries: 2\n    timeout: 900\n    config:\n"
            f"      module: {SCRIPT}\n      connection: cluster\n"
            f"      outputs: [{ns}.events, {{table: {ns}.daily, format: delta}}]\n")
    job = job_create(access=world.access("operator"), spec_text=spec)
    worker = pool.start(concurrency=1, name="spark", queues="spark").wait_ready(timeout=120)
    run = run_create(access=world.access("operator"), job=job)
    wait_for(lambda: RunEvent.objects.filter(run=run, message__contains="both tables committed").exists(),
             timeout=400, what="the first attempt committed", pool=pool, run=run)
    first_app = RunEvent.objects.get(run=run, payload__has_key="spark_app").payload["spark_app"]
    assert on_cluster.app(first_app)["state"] == "RUNNING"
    worker.kill()  # SIGKILL of the worker's whole process group, mid-application
    pool.start(concurrency=1, name="spark", queues="spark")
    wait_for(lambda: Phase.objects.get(run=run).attempt >= 2, timeout=120, what="the phase was requeued",
             pool=pool, run=run)
    # The driver died with its worker: the master no longer runs the old application by the time
    # the new attempt could start one.
    assert on_cluster.app(first_app)["state"] in ("FINISHED", "KILLED")
    # The run, not only its phase: the run settles just after the phase's outcome commits.
    wait_for(lambda: Run.objects.get(pk=run.pk).status in TERMINAL_RUN, timeout=300,
             what="the second attempt finished and the run settled", pool=pool, run=run)
    run.refresh_from_db()
    phase = run.phases.get()
    assert run.status == RunStatus.SUCCEEDED and phase.attempt == 2, phase.error
    assert phase.output["spark"]["adopted"] is True and phase.output["spark"]["applications"] == [first_app]
    lake = lake_of(world)
    for fmt, table in (("iceberg", f"{ns}.events"), ("delta", f"{ns}.daily")):
        assert sorted(table_rows(lake, fmt, table).column("id").to_pylist()) == [0, 1, 2, 3, 4], table
    assert sorted(v.table.name for v in TableVersion.objects.filter(run=run)) == ["daily", "events"]
    # Only the one application ever ran for this phase.
    assert RunEvent.objects.filter(run=run, payload__has_key="spark_app").count() == 1
