"""Airflow drives Control Room: a DAG file using ``ControlRoomRunOperator`` (the provider in
integrations/airflow_provider/, installed into Airflow 3.3's own virtualenv) runs under
``airflow dags test`` against the live test server, whose runs are really executed by the
standalone executor (``runs.remote``, over HTTP). The connection comes from
``AIRFLOW_CONN_CONTROLROOM`` (a token with runs:read and runs:write only), never from the DAG.

``airflow dags test`` runs a deferred task's trigger in line (Airflow 3's ``[DAG TEST] running
trigger in line``), so the deferrable path is the real one: trigger, serialize, async polls,
``execute_complete``."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlroom.access import system_access
from controlroom.models import AuditEvent, Role
from controlroom.services import api_token_create, api_token_revoke
from runs.models import Run, RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_cancel
from tests.airflow_env import AirflowHome, airflow  # noqa: F401 (a session fixture)
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]

NAP = """name: nap
parameters:
  seconds: {type: number, default: 1}
phases:
  - {name: doze, kind: python, config: {callable: sleep, args: {seconds: 3, steps: 3}}}
"""
DOOMED = """name: doomed
phases:
  - {name: warm_up, kind: python, config: {callable: sleep, args: {seconds: 2, steps: 2}}}
  - {name: reconcile, kind: python, depends_on: [warm_up], config: {callable: fail,
     args: {message: the ledger does not balance}}}
"""
LONG_NAP = """name: long_nap
phases:
  - {name: doze, kind: python, config: {callable: sleep, args: {seconds: 60, steps: 60}}}
"""
DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG
from controlroom_airflow.operators import ControlRoomRunOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    tasks = [ControlRoomRunOperator(task_id=task_id, workspace="acme", job={job!r}, parameters=parameters,
                                    deferrable=deferrable, controlroom_conn_id="controlroom", poll_interval=1,
                                    execution_timeout={timeout!r} and timedelta(seconds={timeout!r}))
             for task_id, deferrable, parameters in {tasks!r}]
    if {chain!r}:
        tasks[0] >> tasks[1:]
"""
BOTH = [("deferred", True, {}), ("polled", False, {})]
TIMEOUT_S = 8  # the execution_timeout of the tasks that wait on LONG_NAP
# A kill after the run ended, in Airflow's virtualenv: the hook's cancel_run answers None (Control
# Room said 409), and on_kill logs instead of raising, also when Control Room cannot be reached.
AGAIN = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
from controlroom_airflow.hooks import ControlRoomHook
from controlroom_airflow.operators import ControlRoomRunOperator
run_id = int(sys.argv[1])
print("hook.cancel_run:", ControlRoomHook("controlroom").cancel_run(run_id))
for conn_id in ("controlroom", "nowhere"):
    op = ControlRoomRunOperator(task_id="again", workspace="acme", job="long_nap", controlroom_conn_id=conn_id)
    op._run_id = run_id
    op.on_kill()
print("no exception")
"""
# What Airflow's scheduler does to a deferred task whose trigger did not fire in time, with its own
# code: the deferred task instance (dags test marks it queued while it runs the trigger in line)
# is put back to deferred, and once its trigger_timeout passed, check_trigger_timeouts fails it.
SCHEDULER = """
import sys, time
from datetime import datetime, timezone
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
with create_session() as session:
    ti = session.query(TaskInstance).filter_by(dag_id=sys.argv[1], task_id="deferred").one()
    print("after the kill:", ti.state, ti.next_method, ti.trigger_timeout, ti.run_id)
    ti.state, timeout, run_id = TaskInstanceState.DEFERRED, ti.trigger_timeout, ti.run_id
time.sleep(max(0.0, (timeout - datetime.now(timezone.utc)).total_seconds()) + 0.5)
SchedulerJobRunner(job=Job(), executors=[]).check_trigger_timeouts()
with create_session() as session:
    ti = session.query(TaskInstance).filter_by(dag_id=sys.argv[1], task_id="deferred").one()
    print("after check_trigger_timeouts:", ti.state, ti.next_method, ti.next_kwargs)
print("RUN_ID=" + run_id)
"""
# The logger of each log line: who looked at the run, the trigger or the task itself.
TRIGGER_LOG = re.escape("controlroom_airflow.triggers.ControlRoomRunTrigger")
OPERATOR_LOG = re.escape("airflow.task.operators.controlroom_airflow.operators.ControlRoomRunOperator")


@pytest.fixture
def executor(world, live_server, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """The standalone executor serving the live server: a token that may only claim phases."""
    row, token = api_token_create(access=system_access(world.workspace), name="executor", role=Role.OPERATOR,
                                scopes=["executor"])
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # it speaks only HTTP
    log = (tmp_path / "executor.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runs.remote", "--url", live_server.url, "--token", token, "--kinds", "python",
         "--warehouse", str(tmp_path / "executor-warehouse"), "--datasets", str(tmp_path / "executor-datasets"),
         "--name", "airflow-test", "--heartbeat-s", "2"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        # Its last claim may still be long-polling in the live server: a revoked token ends that
        # within a poll (0.25 s), before the test's database goes away.
        api_token_revoke(access=system_access(world.workspace), token=row)
        time.sleep(1)


@pytest.fixture
def airflow_token(world) -> str:
    """The least a DAG needs: trigger runs and read them."""
    _, token = api_token_create(access=system_access(world.workspace), name="airflow", role=Role.OPERATOR,
                                scopes=["runs:read", "runs:write"])
    return token


@dataclass
class DagTest:
    """``airflow dags test`` of one DAG file, running in the background; ``finish`` waits for it."""

    airflow: AirflowHome
    dag_id: str
    proc: subprocess.Popen
    log: Path
    began: float

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """Its exit code and output (stdout and stderr), the time it took printed."""
        code = self.proc.wait(timeout=timeout)
        seconds = time.monotonic() - self.began
        print(f"airflow dags test {self.dag_id}: exit {code} in {seconds:.1f} s "
              f"(db migrate {self.airflow.migrate_seconds:.1f} s)")
        out = self.log.read_text()
        if os.environ.get("AIRFLOW_TEST_DUMP"):  # a folder to keep each DAG's output in, for a look
            (Path(os.environ["AIRFLOW_TEST_DUMP"]) / f"{self.dag_id}.txt").write_text(out)
        return code, out


def dag_test_start(airflow: AirflowHome, live_server, token: str, *, dag_id: str, job: str,  # noqa: F811
                   tasks: list[tuple[str, bool, dict]], chain: bool = False, timeout: float | None = None) -> DagTest:
    """Write a DAG file whose tasks run ``job`` (each with ``timeout`` seconds as its
    execution_timeout) and start ``airflow dags test`` on it, with the connection (Control Room's
    URL and ``token``) in AIRFLOW_CONN_CONTROLROOM."""
    (airflow.dags / f"{dag_id}.py").write_text(DAG.format(dag_id=dag_id, job=job, tasks=tasks, chain=chain,
                                                          timeout=timeout))
    connection = json.dumps({"conn_type": "controlroom", "host": live_server.url, "password": token})
    log = airflow.home / f"{dag_id}.out"
    with log.open("w") as out:
        proc = subprocess.Popen([str(airflow.binary), "dags", "test", dag_id], cwd=airflow.home, stdout=out,
                                stderr=subprocess.STDOUT, env=airflow.env(AIRFLOW_CONN_CONTROLROOM=connection))
    return DagTest(airflow=airflow, dag_id=dag_id, proc=proc, log=log, began=time.monotonic())


def runs_by_task(*, job: str) -> dict[str, Run]:
    """The job's runs by the Airflow task that triggered them (named in their Idempotency-Key)."""
    return {run.idempotency_key.split("/")[1]: run for run in Run.objects.filter(job__slug=job)}


def task_states(airflow: AirflowHome, dag_id: str) -> dict[str, tuple[str, int | None]]:  # noqa: F811
    """Each task's state and its ``run_id`` XCom, read from Airflow's own metadata database."""
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)))
        xcoms = dict(db.execute("SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'run_id'", (dag_id,)))
    return {task: (state, None if xcoms.get(task) is None else int(xcoms[task])) for task, state in states.items()}


def test_a_dag_runs_a_job_to_success_deferred_then_polling(world, live_server, executor, airflow_token,
                                                            airflow: AirflowHome):  # noqa: F811
    job_create(access=world.access("operator"), spec_text=NAP)
    code, out = dag_test_start(airflow, live_server, airflow_token, dag_id="cr_nap", job="nap", chain=True,
                               tasks=[("deferred", True, {"seconds": 2}), ("polled", False, {})]).finish()
    assert code == 0, out[-6000:]

    runs = list(Run.objects.filter(workspace=world.workspace, job__slug="nap").order_by("pk"))
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED], out[-6000:]
    deferred, polled = runs
    assert deferred.parameters == {"seconds": 2} and polled.parameters == {"seconds": 1}
    for run, task in ((deferred, "deferred"), (polled, "polled")):
        assert run.trigger == Run.Trigger.API and run.created_by_label == "token:airflow"
        assert re.fullmatch(rf"airflow:cr_nap/{task}/manual__[^/]+/-1/1", run.idempotency_key), run.idempotency_key
        assert set(run.phases.values_list("worker", flat=True)) == {"airflow-test"}  # really executed
        assert f"Control Room run {run.pk} of acme/nap (dev, version 1): {live_server.url}/w/acme/runs/{run.pk}/" \
            in out  # the console link, in the task's log
    assert task_states(airflow, "cr_nap") == {"deferred": ("success", deferred.pk), "polled": ("success", polled.pk)}

    # The first task deferred and its trigger polled the unfinished run (the trigger's logger says
    # who looked); the second task polled in place and never deferred.
    assert f"Deferring until run {deferred.pk} ends" in out and out.count("[DAG TEST] running trigger in line") == 1
    assert re.search(rf"Control Room run {deferred.pk} is (queued|running); next look .*\[{TRIGGER_LOG}\]", out)
    assert re.search(rf"Control Room run {deferred.pk} ended: succeeded .*\[{TRIGGER_LOG}\]", out)
    assert re.search(rf"Control Room run {polled.pk} is (queued|running); next look .*\[{OPERATOR_LOG}\]", out)
    assert f"Control Room run {polled.pk} succeeded" in out
    assert airflow_token not in out


def test_a_failed_run_fails_the_task_with_its_error(world, live_server, executor, airflow_token,
                                                     airflow: AirflowHome):  # noqa: F811
    job_create(access=world.access("operator"), spec_text=DOOMED)
    code, out = dag_test_start(airflow, live_server, airflow_token, dag_id="cr_doomed", job="doomed",
                               tasks=BOTH).finish()
    assert code != 0 and "DagRun failed" in out, out[-6000:]

    runs = runs_by_task(job="doomed")  # the two tasks do not depend on each other: either may go first
    assert {t: (r.status, r.error) for t, r in runs.items()} == {
        t: (RunStatus.FAILED, "reconcile: the ledger does not balance") for t in ("deferred", "polled")}
    assert task_states(airflow, "cr_doomed") == {t: ("failed", r.pk) for t, r in runs.items()}
    for run in runs.values():  # the task's exception names the run, how it ended, its error and its page
        assert f"AirflowException: Control Room run {run.pk} of acme/doomed failed: {run.error} " \
               f"({live_server.url}/w/acme/runs/{run.pk}/)" in out, out[-6000:]
    assert out.count("[DAG TEST] running trigger in line") == 1


def test_a_run_cancelled_in_control_room_fails_the_deferred_task(world, live_server, executor, airflow_token,
                                                                  airflow: AirflowHome):  # noqa: F811
    job = job_create(access=world.access("operator"), spec_text=LONG_NAP)
    dag = dag_test_start(airflow, live_server, airflow_token, dag_id="cr_long_nap", job="long_nap",
                         tasks=[("deferred", True, {})])
    try:
        deadline = time.monotonic() + 120
        while not (run := Run.objects.filter(job=job, status=RunStatus.RUNNING).first()):
            assert time.monotonic() < deadline and dag.proc.poll() is None, dag.log.read_text()[-6000:]
            time.sleep(0.5)
        run_cancel(access=world.access("operator"), run=run)  # someone stops it from the console
        code, out = dag.finish(timeout=120)
    finally:
        dag.proc.kill()
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and code != 0, out[-6000:]
    assert task_states(airflow, "cr_long_nap") == {"deferred": ("failed", run.pk)}
    assert re.search(rf"Control Room run {run.pk} ended: cancelled .*\[{TRIGGER_LOG}\]", out), out[-6000:]
    assert f"AirflowException: Control Room run {run.pk} of acme/long_nap cancelled: someone cancelled it in " \
           f"Control Room (its console or API) ({live_server.url}/w/acme/runs/{run.pk}/)" in out, out[-6000:]


def test_execution_timeout_cancels_the_run_deferred_and_polled(world, live_server, executor, airflow_token,
                                                                airflow: AirflowHome):  # noqa: F811
    """Both tasks wait on a 60 s run with an 8 s execution_timeout. The polled one is timed out by
    Airflow (AirflowTaskTimeout), which calls the operator's on_kill (the same hook Airflow's SIGTERM
    calls when a user marks the task failed or success, or clears it). The deferred one's trigger
    runs in line under ``dags test``, where Airflow enforces no deferral timeout: the trigger's own
    deadline fires and execute_complete cancels. Either way Control Room ends the run cancelled,
    by the DAG's token."""
    job_create(access=world.access("operator"), spec_text=LONG_NAP)
    code, out = dag_test_start(airflow, live_server, airflow_token, dag_id="cr_timeout", job="long_nap",
                               tasks=BOTH, timeout=TIMEOUT_S).finish(timeout=180)
    assert code != 0 and "DagRun failed" in out, out[-6000:]
    runs = runs_by_task(job="long_nap")
    assert task_states(airflow, "cr_timeout") == {t: ("failed", r.pk) for t, r in runs.items()} \
        and set(runs) == {"deferred", "polled"}, out[-6000:]
    deferred, polled = runs["deferred"], runs["polled"]

    # Airflow timed the polled task out and called on_kill, which cancelled through the ops API.
    assert "AirflowTaskTimeout" in out, out[-6000:]
    assert re.search(rf"Cancelled Control Room run {polled.pk} \(the Airflow task was killed or timed out\): "
                     rf"it is \w+ .*\[{OPERATOR_LOG}\]", out), out[-6000:]
    # The deferred task's trigger saw its deadline pass; resumed, the task cancelled and failed.
    assert re.search(rf"Control Room run {deferred.pk}: the task's execution_timeout is up .*\[{TRIGGER_LOG}\]",
                     out), out[-6000:]
    assert re.search(rf"Cancelled Control Room run {deferred.pk} \(execution_timeout\): it is \w+ "
                     rf".*\[{OPERATOR_LOG}\]", out), out[-6000:]
    assert f"TaskDeferralTimeout: Control Room run {deferred.pk} of acme/long_nap did not end within the " \
           f"task's execution_timeout (0:00:{TIMEOUT_S:02d}); cancelled it" in out, out[-6000:]

    # In Control Room each run ends cancelled (a running phase learns it at its next heartbeat),
    # long before its 60 s nap would have, and the audit log names the DAG's token.
    deadline = time.monotonic() + 60
    while Run.objects.filter(pk__in=[deferred.pk, polled.pk]).exclude(status=RunStatus.CANCELLED).exists():
        assert time.monotonic() < deadline, [(r.pk, r.status) for r in Run.objects.filter(job__slug="long_nap")]
        time.sleep(0.5)
    for run in (deferred, polled):
        run.refresh_from_db()
        assert run.cancel_requested and (run.finished_at - run.created_at).total_seconds() < 45
        audit = AuditEvent.objects.get(action="run.cancel", target_type="run", target_id=str(run.pk))
        assert (audit.actor_label, audit.after) == ("token:airflow", {"cancel_requested": True})
        print(f"run {run.pk}: started {run.started_at is not None}, cancelled "
              f"{(run.finished_at - run.created_at).total_seconds():.1f} s after it was created")
    assert out.count("[DAG TEST] running trigger in line") == 1 and airflow_token not in out

    # Killing again once the run has ended changes nothing and raises nothing.
    (airflow.home / "again.py").write_text(AGAIN)
    again = subprocess.run(
        [str(airflow.binary.parent / "python"), str(airflow.home / "again.py"), str(polled.pk)], cwd=airflow.home,
        env=airflow.env(AIRFLOW_CONN_CONTROLROOM=json.dumps({"conn_type": "controlroom", "host": live_server.url,
                                                             "password": airflow_token}),
                        AIRFLOW_CONN_NOWHERE=json.dumps({"conn_type": "controlroom", "host": "http://127.0.0.1:9",
                                                         "password": "crt_nothing"})),
        text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, check=False)
    assert again.returncode == 0 and again.stdout.rstrip().endswith("no exception"), again.stdout[-4000:]
    assert "hook.cancel_run: None" in again.stdout, again.stdout[-4000:]
    assert f"Control Room run {polled.pk} had already ended; nothing to cancel" in again.stdout, again.stdout[-4000:]
    assert f"Could not cancel Control Room run {polled.pk} (the Airflow task was killed or timed out): " \
           "Control Room could not be reached" in again.stdout, again.stdout[-4000:]
    assert AuditEvent.objects.filter(action="run.cancel").count() == 2
    polled.refresh_from_db()
    assert polled.status == RunStatus.CANCELLED


def test_airflows_own_deferral_timeout_cancels_the_run(world, live_server, executor, airflow_token,
                                                       airflow: AirflowHome):  # noqa: F811
    """The path a real deployment takes when the triggerer does not fire in time: the scheduler's
    check_trigger_timeouts sets the deferred task instance to be resumed with ``__fail__``, and the
    worker's resume_execution raises TaskDeferralTimeout; the operator cancels the run first (its
    id from the task's ``run_id`` XCom). ``dags test`` has no triggerer or scheduler, so: its
    in-line trigger is killed before its own deadline (a dead triggerer), Airflow's scheduler
    function runs on the task instance, and ``airflow tasks test`` resumes it."""
    job = job_create(access=world.access("operator"), spec_text=LONG_NAP)
    dag = dag_test_start(airflow, live_server, airflow_token, dag_id="cr_deferral_timeout", job="long_nap",
                         tasks=[("deferred", True, {})], timeout=TIMEOUT_S)
    try:
        deadline = time.monotonic() + 120
        while "[DAG TEST] running trigger in line" not in dag.log.read_text():
            assert time.monotonic() < deadline and dag.proc.poll() is None, dag.log.read_text()[-6000:]
            time.sleep(0.1)
    finally:
        dag.proc.kill()
        dag.proc.wait()
    run = Run.objects.get(job=job)
    connection = json.dumps({"conn_type": "controlroom", "host": live_server.url, "password": airflow_token})
    (airflow.home / "scheduler.py").write_text(SCHEDULER)
    scheduler = subprocess.run([str(airflow.binary.parent / "python"), str(airflow.home / "scheduler.py"),
                                "cr_deferral_timeout"], cwd=airflow.home, env=airflow.env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, check=False)
    assert scheduler.returncode == 0 and "after check_trigger_timeouts: scheduled __fail__ {'error': " \
        in scheduler.stdout, scheduler.stdout[-4000:]
    print(*(line for line in scheduler.stdout.splitlines() if line.startswith("after ")), sep="\n")
    assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING) and not run.cancel_requested  # nobody cancelled
    run_id = scheduler.stdout.rsplit("RUN_ID=", 1)[1].strip()
    began = time.monotonic()
    resumed = airflow.run("tasks", "test", "cr_deferral_timeout", "deferred", run_id, timeout=180,
                          AIRFLOW_CONN_CONTROLROOM=connection)
    print(f"airflow tasks test (resume with __fail__): exit {resumed.returncode} in {time.monotonic() - began:.1f} s")
    out = resumed.stdout
    if os.environ.get("AIRFLOW_TEST_DUMP"):
        (Path(os.environ["AIRFLOW_TEST_DUMP"]) / "cr_deferral_timeout.resumed.txt").write_text(out)
    assert re.search(rf"Cancelled Control Room run {run.pk} \(Airflow failed the deferred task: [^)]*[Tt]imeout\): "
                     rf"it is \w+ .*\[{OPERATOR_LOG}\]", out), out[-6000:]
    assert "TaskDeferralTimeout" in out and "running trigger in line" not in out, out[-6000:]
    assert task_states(airflow, "cr_deferral_timeout") == {"deferred": ("failed", run.pk)}

    deadline = time.monotonic() + 60
    while (run := Run.objects.get(pk=run.pk)).status != RunStatus.CANCELLED:
        assert time.monotonic() < deadline, run.status
        time.sleep(0.5)
    audit = AuditEvent.objects.get(action="run.cancel", target_type="run", target_id=str(run.pk))
    assert audit.actor_label == "token:airflow" and airflow_token not in out
