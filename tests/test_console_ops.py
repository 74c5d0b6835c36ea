"""The ops pages: the workspace overview, the jobs list's health columns, a job's grid, pausing a
schedule from the jobs list. Runs are made by the real services (eager workers), then aged or
failed where a case needs it."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlroom.models import AuditEvent
from runs.models import Job, JobSchedule, Run
from runs.services.jobs import job_create, job_update
from runs.services.runs import run_create
from runs.services.schedules import schedule_set

pytestmark = pytest.mark.django_db
FLAKY = """name: flaky
phases:
  - {name: load, kind: sql, config: {table: t, sql: "select 1 as x"}}
  - {name: check, kind: sql, depends_on: [load], config: {sql: "select count(*) from no_such_table"}}
"""
FINE = """name: fine
phases:
  - {name: one, kind: sql, config: {table: one, sql: "select 1 as x"}}
"""


def _run(world, job, capture, **kwargs) -> Run:
    with capture(execute=True):
        run = run_create(access=world.access("operator"), job=job, **kwargs)
    run.refresh_from_db()
    return run


@pytest.fixture
def jobs(world, eager_celery, django_capture_on_commit_callbacks):
    """'flaky' failed twice after one success; 'fine' succeeded; one queued run waits."""
    operator = world.access("operator")
    flaky = job_create(access=operator, spec_text=FINE.replace("fine", "flaky"))
    fine = job_create(access=operator, spec_text=FINE)
    runs = [_run(world, flaky, django_capture_on_commit_callbacks)]
    job_update(access=operator, job=flaky, spec_text=FLAKY)
    flaky.refresh_from_db()
    runs += [_run(world, flaky, django_capture_on_commit_callbacks) for _ in range(2)]
    runs.append(_run(world, fine, django_capture_on_commit_callbacks))
    assert [r.status for r in runs] == ["succeeded", "failed", "failed", "succeeded"]
    with django_capture_on_commit_callbacks(execute=False):  # no worker picks these up
        waiting = run_create(access=operator, job=fine)  # admitted: its phase waits for a worker
        Job.objects.filter(pk=fine.pk).update(max_concurrent_runs=1)
        fine.refresh_from_db()
        queued = run_create(access=operator, job=fine)  # over the job's limit: queued
    assert (waiting.status, queued.status) == ("running", "queued")
    return {"flaky": flaky, "fine": fine, "runs": runs, "queued": queued, "waiting": waiting}


def test_the_workspace_overview(world, jobs):
    old = jobs["runs"][0]
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    response = world.client("viewer").get("/w/acme/")
    assert response.status_code == 200
    page = response.content.decode()
    counts = dict(re.findall(r'<strong data-state="(\w+)">(\d+)</strong>', page))
    assert counts == {"queued": "1", "running": "1", "succeeded": "1", "failed": "2", "cancelled": "0"}
    failing = page[page.index('id="failing-jobs"'):page.index('id="waiting"')]
    assert ">flaky<" in failing and ">fine<" not in failing and f"#{jobs['runs'][2].pk}" in failing
    waiting = page[page.index('id="waiting"'):page.index('id="late"')]
    assert f"#{jobs['queued'].pk}" in waiting and "1 of 1 runs of this job are running" in waiting
    assert "1 phase of running runs waits for a worker" in waiting
    failures = page[page.index('id="failures"'):]
    assert failures.count("<tr>") == 3  # header and the two failed runs
    assert "check: " in failures and "no_such_table" in failures  # the failed phase's first error line
    # One member sees their workspace; another workspace's runs never show.
    assert world.client("outsider").get("/w/acme/").status_code == 404
    assert "flaky" not in world.client("outsider").get("/w/other/").content.decode()


def test_the_overview_names_a_schedule_beat_has_not_ticked(world, jobs):
    schedule = schedule_set(access=world.access("operator"), job=jobs["fine"], environment="dev",
                            cron="*/5 * * * *", late_after_s=60)
    page = world.client("viewer").get("/w/acme/").content.decode()
    assert "Every schedule is on time" in page
    JobSchedule.objects.filter(pk=schedule.pk).update(last_tick_at=timezone.now() - dt.timedelta(minutes=30))
    page = world.client("viewer").get("/w/acme/").content.decode()
    late = page[page.index('id="late"'):page.index('id="failures"')]
    assert "is beat running?" in late and "*/5 * * * *" in late


def test_the_jobs_list_shows_each_jobs_health(world, jobs, django_assert_max_num_queries):
    schedule_set(access=world.access("operator"), job=jobs["fine"], environment="stage", cron="0 6 * * *",
                 timezone="Europe/Berlin")
    viewer = world.client("viewer")
    with django_assert_max_num_queries(10):
        page = viewer.get("/w/acme/jobs/").content.decode()
    rows = {slug: html for slug, html in re.findall(r'data-job="([\w-]+)">(.*?)</tr>', page, re.S)}
    flaky, fine = rows["flaky"], rows["fine"]
    assert re.findall(r'class="sq (\w+)"', flaky) == ["succeeded", "failed", "failed"]  # oldest first
    assert 'class="num success-rate">33%' in flaky and "last-state\">failed" in flaky
    assert re.findall(r'class="sq (\w+)"', fine) == ["succeeded", "running", "queued"]
    assert 'success-rate">100%' in fine and "last-state\">queued" in fine
    assert "operator" in flaky  # the owner
    # "Updated" is the newest version's time, not the job's first.
    flaky_job = Job.objects.get(slug="flaky")
    assert flaky_job.current_version.number == 2
    newest = timezone.localtime(flaky_job.current_version.created_at).strftime("%Y-%m-%d %H:%M")
    assert f"<td>{newest}</td>" in flaky
    fire = re.search(r'<time datetime="([^"]+)">', fine)
    assert fire and dt.datetime.fromisoformat(fire.group(1)).astimezone(ZoneInfo("Europe/Berlin")).hour == 6
    assert "Pause</button>" not in fine and "not scheduled" in flaky  # a viewer may not pause
    assert "Pause</button>" in world.client("operator").get("/w/acme/jobs/").content.decode()


def test_the_jobs_list_keeps_its_query_count_with_many_jobs(world, jobs):
    for n in range(15):
        job_create(access=world.access("operator"), spec_text=FINE.replace("fine", f"more-{n}"))
    viewer = world.client("viewer")
    with CaptureQueriesContext(connection) as few:
        viewer.get("/w/acme/jobs/")
    for n in range(15, 30):
        job_create(access=world.access("operator"), spec_text=FINE.replace("fine", f"more-{n}"))
    with CaptureQueriesContext(connection) as more:
        assert viewer.get("/w/acme/jobs/").content.decode().count('class="job-row"') == 32
    assert len(more) == len(few) <= 10


def test_pause_and_resume_a_schedule_from_the_jobs_list(world, jobs):
    schedule = schedule_set(access=world.access("operator"), job=jobs["fine"], environment="dev", cron="0 * * * *")
    url = "/w/acme/jobs/fine/pause/"
    assert world.client("analyst").post(url, {"environment": "dev", "action": "pause"}).status_code == 403
    assert world.client("outsider").post(url, {"environment": "dev", "action": "pause"}).status_code == 404
    response = world.client("operator").post(url, {"environment": "dev", "action": "pause"}, follow=True)
    schedule.refresh_from_db()
    assert not schedule.enabled and not schedule.periodic_task.enabled
    assert "schedule paused" in response.content.decode() and "Resume</button>" in response.content.decode()
    assert AuditEvent.objects.filter(action="schedule.pause", target_id=str(schedule.pk)).exists()
    world.client("operator").post(url, {"environment": "dev", "action": "resume"})
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.periodic_task.enabled
    missing = world.client("operator").post(url, {"environment": "prod", "action": "pause"}, follow=True)
    assert "has no schedule in prod" in missing.content.decode()


def test_the_grid_is_runs_by_phases_linking_to_each_phase_log(world, jobs):
    response = world.client("viewer").get("/w/acme/jobs/flaky/grid/")
    assert response.status_code == 200
    page = response.content.decode()
    first, second, third = jobs["runs"][:3]
    header = re.findall(r'<th class="run-col"><a href="/w/acme/runs/(\d+)/"', page)
    assert header == [str(first.pk), str(second.pk), str(third.pk)]  # oldest on the left
    rows = dict(re.findall(r'<th class="phase-name">(\w+)</th>(.*?)</tr>', page, re.S))
    assert list(rows) == ["load", "check", "one"]  # the current version's phases, then older names
    assert re.findall(r'data-state="(\w+)"', rows["check"]) == ["failed", "failed"]
    assert re.findall(r'data-state="(\w+)"', rows["load"]) == ["succeeded", "succeeded"]
    assert rows["one"].count('class="sq none"') == 2
    assert f'href="/w/acme/runs/{third.pk}/?phase=check&amp;attempt=1#log"' in rows["check"]
    bad = world.client("viewer").get("/w/acme/jobs/flaky/grid/?before=10000000000000000000000000000000000000000")
    assert bad.status_code == 200 and "must be a run number" in bad.content.decode()
    assert world.client("outsider").get("/w/acme/jobs/flaky/grid/").status_code == 404
