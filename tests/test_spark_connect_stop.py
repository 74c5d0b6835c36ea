"""A `spark` phase on a real Spark Connect server: what it runs there stops with it.

On Connect the operation runs in the server, which goes on without its client. Cancel interrupts
the phase's session on the server (not only the local driver), and a retried attempt interrupts
the session of an attempt whose driver died (here killed with -9, as a worker's death kills it)
before it starts its own (``lakehouse.spark.connect``). The server's own REST API is the witness."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from django.db import connections

from connections.models import Connection
from runs.models import Phase, PhaseState, RunStatus
from runs.services.runs import run_cancel
from tests.test_spark_phase import execute, logs, start

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
SLOW = "tests.spark_scripts.slow_sql"


@pytest.fixture
def on_connect(world, spark_connect, settings):
    """The workspace's spark connection ``connect`` is the session's Spark Connect server."""
    settings.SPARK_MODULES = [SLOW]
    settings.PHASE_LEASE_TTL_S = 1  # the heartbeat that carries a cancel comes every ~0.33 s
    Connection.objects.create(workspace=world.workspace, name="connect", kind=Connection.Kind.SPARK,
                              config={"master": spark_connect.url})
    return spark_connect


def job_spec(retries: int = 0) -> str:
    return (f"name: connect-{uuid.uuid4().hex[:6]}\nphases:\n  - name: transform\n    kind: spark\n"
            f"    retries: {retries}\n    timeout: 900\n    config:\n      module: {SLOW}\n      connection: connect\n")


def running_jobs(server, session: str = "") -> list[dict]:
    """The server's running Spark jobs (of one Connect session, if named: its id is in the job tags)."""
    base = f"{server.ui_url}/api/v1/applications"
    [app] = requests.get(base, timeout=10).json()
    jobs = requests.get(f"{base}/{app['id']}/jobs", params={"status": "running"}, timeout=10).json()
    return [j for j in jobs if not session or any(session in tag for tag in j.get("jobTags", []))]


def session_of(run, attempt: int) -> str:
    from lakehouse.spark.connect import SESSION_KEY

    event = run.events.filter(payload__has_key=SESSION_KEY, payload__attempt=attempt).first()
    return event.payload[SESSION_KEY] if event else ""


def wait(condition, *, timeout: float, what: str, run) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"{what}: not after {timeout:.0f} s\n" + "\n".join(logs(run)[-20:])
        time.sleep(0.2)
    return time.monotonic() - began


def in_thread(run) -> threading.Thread:
    worker = threading.Thread(target=lambda: (execute(run), connections.close_all()))
    worker.start()
    return worker


def test_cancel_interrupts_the_sessions_operation_on_the_connect_server(
        world, on_connect, django_capture_on_commit_callbacks):
    run = start(world, job_spec(), django_capture_on_commit_callbacks)
    worker = in_thread(run)
    wait(lambda: session_of(run, 1) and running_jobs(on_connect, session_of(run, 1)), timeout=180,
         what="the slow operation runs on the server", run=run)
    session = session_of(run, 1)
    run_cancel(access=world.access("operator"), run=run)
    took = wait(lambda: not running_jobs(on_connect, session), timeout=10,
                what="the server stopped the session's operation", run=run)
    worker.join(60)
    print(f"the Connect server's job stopped {took:.2f} s after the cancel")
    run.refresh_from_db()
    assert run.phases.get().state == PhaseState.CANCELLED and run.status == RunStatus.CANCELLED


def _driver_pids() -> list[int]:
    """This process's children running the driver program (from /proc: no procps needed)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == os.getpid() and b"lakehouse.spark.driver" in command:
            found.append(int(proc.name))
    return found


def test_a_retry_stops_the_session_of_an_attempt_whose_driver_died_before_starting_its_own(
        world, on_connect, django_capture_on_commit_callbacks):
    run = start(world, job_spec(retries=1), django_capture_on_commit_callbacks)
    worker = in_thread(run)
    wait(lambda: session_of(run, 1) and running_jobs(on_connect, session_of(run, 1)), timeout=180,
         what="attempt 1's operation runs on the server", run=run)
    first = session_of(run, 1)
    [pid] = _driver_pids()
    os.kill(pid, signal.SIGKILL)  # the client dies as it does with a worker killed with -9
    worker.join(60)
    phase = Phase.objects.get(run=run)
    assert phase.state == PhaseState.PENDING and phase.attempt == 1, (phase.state, phase.error)
    time.sleep(2)
    assert running_jobs(on_connect, first), "the server should still run the orphaned operation"

    Phase.objects.filter(pk=phase.pk).update(not_before=None)  # no retry delay in a test
    worker = in_thread(run)
    wait(lambda: session_of(run, 2), timeout=120, what="attempt 2 started its session", run=run)
    stopped = [line for line in logs(run) if line.startswith(f"stopped Spark Connect session {first} of attempt 1")]
    assert stopped == [f"stopped Spark Connect session {first} of attempt 1 before starting again "
                       "(1 operation(s) were still running)"], logs(run)[-20:]
    assert not running_jobs(on_connect, first)  # gone before attempt 2 made its session
    run_cancel(access=world.access("operator"), run=run)
    worker.join(60)
    run.refresh_from_db()
    assert run.phases.get().state == PhaseState.CANCELLED
