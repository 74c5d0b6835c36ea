"""Soak: the run command's whole stack under a steady mix of work for a few minutes.

``scripts/run.sh`` (supervisor, gunicorn, one Celery worker, beat, the embedded broker) runs
while this test, for ``SOAK_S`` seconds, triggers the medallion job over the HTTP API every few
seconds, submits SQL through the editor's form, and requests pages as the signed-in demo user.

Schedules are cron, to the minute, which would give only two or three ticks in the window. So
the test points the schedule's django-celery-beat ``PeriodicTask`` at an ``IntervalSchedule``
of ``TICK_S`` seconds instead of its crontab: beat then sends a ``schedule_tick`` message
through the broker every few seconds, and each tick runs the real service, which creates the
run of each new cron minute and nothing for the ticks in between (a repeated tick is harmless).

At the end, after the schedule is switched off and the work has drained: no child crashed or
was restarted, every run (API and scheduled) succeeded, every SQL execution succeeded, every
cron minute of the window has its run, every task beat sent was executed, the worker received
no message twice, and nothing is left in the broker's queues.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.processes import REPO, RunningServer, run_command, run_command_env
from tests.test_run_command import Web, assert_ctrl_c_stops_everything, children, parse_form, sign_in

# Its stack is the run command's own (embedded SQLite): the same in either pass, so it runs once.
pytestmark = [pytest.mark.slow, pytest.mark.once]
SOAK_S = float(os.environ.get("CONTROLROOM_TEST_SOAK_S", "150"))
TICK_S = 3
RUN_EVERY_S = 4.0
SQL_EVERY_S = 3.0
DRAIN_TIMEOUT_S = 180.0
PAGES = ("w/demo/jobs/", "w/demo/runs/", "w/demo/jobs/medallion/", "w/demo/sql/history/", "w/demo/artifacts/",
         "healthz")

SETUP = """
import json
from django_celery_beat.models import IntervalSchedule
from controlroom.access import system_access
from controlroom.models import Workspace
from controlroom.services import api_token_create
from runs.models import Job
from runs.services.schedules import schedule_set
ws = Workspace.objects.get(slug="demo")
access = system_access(ws)
_, token = api_token_create(access=access, name="soak", role="operator")
schedule = schedule_set(access=access, job=Job.objects.get(workspace=ws, slug="medallion"), environment="dev",
                        cron="* * * * *")
every, _ = IntervalSchedule.objects.get_or_create(every=%d, period=IntervalSchedule.SECONDS)
task = schedule.periodic_task
task.interval, task.crontab = every, None
task.save()
print(json.dumps({"token": token, "schedule": schedule.pk}))
"""
SCHEDULE_OFF = """
from runs.models import JobSchedule
task = JobSchedule.objects.get(pk=%d).periodic_task
task.enabled = False
task.save()
"""
STATE = """
import json
from runs.models import JobSchedule, Run
from runs.services.schedules import ticks_between
from sqlwarehouse.models import QueryExecution
schedule = JobSchedule.objects.get(pk=%d)
print(json.dumps({
    "runs": list(Run.objects.values_list("id", "status", "trigger", "scheduled_for", "error")),
    "executions": list(QueryExecution.objects.values_list("id", "status", "error")),
    "ticks": ticks_between(cron=schedule.cron, zone=schedule.timezone, start=schedule.created_at,
                           end=schedule.last_tick_at),
}, default=str))
"""


def manage_shell(server: RunningServer, code: str) -> str:
    """Run Python in ``manage.py shell`` against the run command's own database."""
    env = run_command_env(server.log_path.parent / "data", 0)
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def api_trigger(server: RunningServer, token: str) -> int:
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
        server.url + "api/v1/workspaces/demo/jobs/medallion/runs", method="POST",
        data=json.dumps({"environment": "dev"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 201
        return int(json.loads(response.read())["id"])


def submit_sql(web: Web, n: int) -> int:
    editor = web.open("w/demo/sql/")
    form = parse_form(editor.text, "editor-form")
    page = web.open("w/demo/sql/", {"csrfmiddlewaretoken": form.fields["csrfmiddlewaretoken"],
                                    "connection": form.options["connection"][0], "environment": "dev",
                                    "sql": f"SELECT {n} AS n, count(*) AS c FROM range(10000)", "run": "1"})
    found = re.search(r"/sql/executions/(\d+)/$", page.url)
    assert page.status == 200 and found, f"{page.status} {page.url}\n{page.text[:1000]}"
    return int(found.group(1))


def task_counts(log: str) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Tasks beat sent, tasks the worker finished, and how often each task id was received."""
    sent = Counter(re.findall(r"Sending due task \S+ \((\S+)\)", log))
    done = Counter(re.findall(r"Task (\S+)\[[0-9a-f-]+\] succeeded in", log))
    received = Counter(re.findall(r"Task \S+\[([0-9a-f-]+)\] received", log))
    return sent, done, received


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def queued_files(server: RunningServer) -> list[str]:
    queues = server.log_path.parent / "data" / "broker" / "queues"
    return sorted(str(p.relative_to(queues)) for name in ("default", "sql") for p in (queues / name).glob("*.msg"))


def test_soak_the_run_command_stack(tmp_path: Path) -> None:
    with run_command(tmp_path) as server:
        def why(message: str) -> str:
            return f"{message}\n--- run.sh log (tail) ---\n{server.log_tail(80)}"

        web = Web(server.url)
        assert sign_in(web, server).status == 200
        setup = json.loads(manage_shell(server, SETUP % TICK_S))
        started = children(server)

        api_runs: list[int] = []
        executions: list[int] = []
        bad_pages: list[str] = []
        began = time.monotonic()
        next_run = next_sql = began
        pages = 0
        while (now := time.monotonic()) - began < SOAK_S:
            if now >= next_run:
                api_runs.append(api_trigger(server, setup["token"]))
                next_run += RUN_EVERY_S
            if now >= next_sql:
                executions.append(submit_sql(web, len(executions)))
                next_sql += SQL_EVERY_S
            path = PAGES[pages % len(PAGES)] if pages % 7 else f"w/demo/runs/{api_runs[-1]}/"
            page = web.open(path)
            pages += 1
            if page.status != 200:
                bad_pages.append(f"{path}: {page.status}")
            time.sleep(0.2)
        soaked = time.monotonic() - began

        manage_shell(server, SCHEDULE_OFF % setup["schedule"])

        def settled() -> dict:
            state = json.loads(manage_shell(server, STATE % setup["schedule"]))
            state["busy"] = [r for r in state["runs"] if r[1] in ("queued", "running")] + [
                e for e in state["executions"] if e[1] in ("queued", "running")]
            return state

        deadline, state = time.monotonic() + DRAIN_TIMEOUT_S, settled()
        while state["busy"] and time.monotonic() < deadline:
            time.sleep(2)
            state = settled()
        assert not state["busy"], why(f"still busy after {DRAIN_TIMEOUT_S:.0f} s: {state['busy']}")
        sent_before, _, _ = task_counts(server.log_path.read_text(errors="replace"))

        def caught_up() -> bool:
            _, done, _ = task_counts(server.log_path.read_text(errors="replace"))
            return all(done[name] >= count for name, count in sent_before.items())

        assert wait_until(caught_up, 60), why(f"beat sent {sent_before}, the worker finished "
                                              f"{task_counts(server.log_path.read_text(errors='replace'))[1]}")
        assert wait_until(lambda: not queued_files(server), 15), why(f"left in the queues: {queued_files(server)}")
        log = server.log_path.read_text(errors="replace")
        sent, done, received = task_counts(log)

        # No child crashed or was restarted, and the broker never failed anyone.
        assert " died after " not in log and "Unrecoverable error" not in log, why("a child crashed")
        assert children(server) == started, why("a child was restarted")
        assert not (server.log_path.parent / "data" / "broker" / "quarantine").exists(), why("a file was quarantined")
        # Every message was delivered once: no task id received twice, every tick beat sent executed.
        assert [task_id for task_id, n in received.items() if n > 1] == [], why("a message was delivered twice")
        assert sent["runs.schedule_tasks.schedule_tick"] >= SOAK_S / TICK_S * 0.8, why(f"too few ticks: {sent}")
        # Every run and every SQL execution finished, successfully; none was lost.
        runs = {r[0]: r for r in state["runs"]}
        assert set(api_runs) <= set(runs), why(f"API runs missing: {set(api_runs) - set(runs)}")
        assert [r for r in runs.values() if r[1] != "succeeded"] == [], why("a run did not succeed")
        statuses = {e[0]: e for e in state["executions"]}
        assert set(executions) <= set(statuses) and [e for e in statuses.values() if e[1] != "succeeded"] == []
        # Every cron minute the schedule saw has exactly one run.
        scheduled = Counter(r[3] for r in runs.values() if r[2] == "schedule")
        assert state["ticks"] and all(scheduled[tick] == 1 for tick in state["ticks"]), why(
            f"minutes {state['ticks']}, scheduled runs {scheduled}")
        assert bad_pages == [], bad_pages

        print(f"\nsoak: {soaked:.0f} s, {len(api_runs)} API runs + {sum(scheduled.values())} scheduled runs "
              f"succeeded, {len(executions)} SQL executions, {pages} pages, "
              f"{sent['runs.schedule_tasks.schedule_tick']} ticks sent / {done['runs.schedule_tasks.schedule_tick']} "
              f"executed, {sum(received.values())} messages received by the worker")
        assert_ctrl_c_stops_everything(server)
