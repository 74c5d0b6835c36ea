"""The standalone executor, a separate process that speaks only HTTP, runs the demo job."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from artifacts.storage import get_store
from runs.models import RunStatus
from runs.services.runs import run_create
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_standalone_executor_runs_the_demo_job_over_http(world, demo_job, live_server, tmp_path: Path):
    run = run_create(access=world.access("operator"), job=demo_job)  # the Celery wake-up goes nowhere here
    warehouse, datasets = tmp_path / "remote-warehouse", tmp_path / "remote-datasets"
    datasets.mkdir()
    (datasets / "orders.csv").write_bytes((REPO / "demo" / "data" / "orders.csv").read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # it needs no database
    result = subprocess.run(
        [sys.executable, "-m", "runs.remote", "--url", live_server.url, "--token", world.token("operator"),
         "--kinds", "sql,python", "--warehouse", str(warehouse), "--datasets", str(datasets), "--name", "laptop-7",
         "--until-idle"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error, result.stderr[-3000:])
    assert set(run.phases.values_list("worker", flat=True)) == {"laptop-7"}
    assert (warehouse / "dev" / "warehouse.duckdb").exists()  # the SQL ran on the executor's machine
    logs = list(run.events.filter(type="PHASE_LOG").values_list("message", flat=True))
    assert "table gold_revenue_by_country has 6 rows" in logs
    artifact = run.artifacts.get()
    stored = get_store().open(artifact.sha256).read()
    assert hashlib.sha256(stored).hexdigest() == artifact.sha256 and stored.startswith(b"country,orders")
    assert "ran 5 phase(s)" in result.stderr


def test_manage_py_executor_is_the_same_command():
    result = subprocess.run([sys.executable, "manage.py", "executor", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--until-idle" in result.stdout


def test_a_cancel_reaches_a_remote_phase_between_lease_renewals(world, live_server, tmp_path: Path, settings):
    """With renewals 30 s apart, the executor still hears of a cancel within a few seconds (it
    reads the run every 2 s in between), and the phase ends cancelled, never succeeded."""
    import time

    from runs.models import Phase
    from runs.services.jobs import job_create
    from runs.services.runs import run_cancel

    settings.PHASE_LEASE_TTL_S = 120
    job = job_create(access=world.access("operator"), spec_text="""name: slow
phases:
  - {name: nap, kind: python, config: {callable: sleep, args: {seconds: 60, steps: 600}}}
""")
    run = run_create(access=world.access("operator"), job=job)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    executor = subprocess.Popen(
        [sys.executable, "-m", "runs.remote", "--url", live_server.url, "--token", world.token("operator"),
         "--kinds", "python", "--warehouse", str(tmp_path / "w"), "--datasets", str(tmp_path / "d"),
         "--until-idle", "--heartbeat-s", "30"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 60
        while not run.events.filter(type="PHASE_LOG", message__startswith="step").exists():
            assert time.monotonic() < deadline and executor.poll() is None, "the phase never started"
            time.sleep(0.2)
        run_cancel(access=world.access("operator"), run=run)
        asked = time.monotonic()
        while Phase.objects.get(run=run).state == "running":
            assert time.monotonic() - asked < 15, "the cancel waited for the next renewal (30 s)"
            time.sleep(0.1)
        heard = time.monotonic() - asked
        executor.wait(timeout=30)
    finally:
        executor.kill()
    phase = Phase.objects.get(run=run)
    run.refresh_from_db()
    assert (phase.state, run.status) == ("cancelled", "cancelled"), executor.stdout.read()[-2000:]
    print(f"cancel heard by the remote executor after {heard:.2f} s")
