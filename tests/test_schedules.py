"""Job schedules: validation, the django-celery-beat entry, ticks and missed-tick policies, the page."""

import datetime as dt
import json
import re

import pytest
from django.core.exceptions import PermissionDenied
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from controlroom.models import AuditEvent
from controlroom.services import ServiceError
from runs.models import EventType, JobSchedule, Run
from runs.services import schedules
from runs.services.schedules import next_fires, schedule_delete, schedule_set, schedule_tick, ticks_between

pytestmark = pytest.mark.django_db

UTC = dt.UTC
NOON = dt.datetime(2025, 1, 6, 12, 0, 10, tzinfo=UTC)  # a Monday, ten seconds after the hourly tick


def at(hour: int, minute: int = 0, day: int = 6) -> dt.datetime:
    return dt.datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def make_schedule(world, job, *, last_tick_at: dt.datetime, **kwargs) -> JobSchedule:
    kwargs.setdefault("cron", "0 * * * *")
    schedule = schedule_set(access=world.access("operator"), job=job, environment="dev", **kwargs)
    JobSchedule.objects.filter(pk=schedule.pk).update(last_tick_at=last_tick_at)
    return schedule


def tick(schedule: JobSchedule, now: dt.datetime, django_capture_on_commit_callbacks) -> list[Run]:
    with django_capture_on_commit_callbacks(execute=False):
        return schedule_tick(schedule_id=schedule.pk, now=now)


def nothing_written() -> bool:
    return (not JobSchedule.objects.exists() and not PeriodicTask.objects.filter(name__startswith="schedule:").exists()
            and not CrontabSchedule.objects.exists()
            and not AuditEvent.objects.filter(action__startswith="schedule.").exists())


@pytest.mark.parametrize(("cron", "named"), [
    ("* * * *", "5 fields"),
    ("61 * * * *", "minute field '61'"),
    ("0 24 * * *", "hour field '24'"),
    ("0 0 32 * *", "day of month field '32'"),
    ("0 0 * 13 *", "month field '13'"),
    ("0 0 * * 7", "day of week field '7'"),
    ("*/0 * * * *", "minute field '*/0'"),
    ("0 0 * * funday", "day of week field 'funday'"),
])
def test_bad_cron_is_refused_naming_the_field_and_writes_nothing(world, demo_job, cron, named):
    with pytest.raises(ServiceError) as error:
        schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron=cron)
    assert str(error.value).startswith("cron:") and named in str(error.value)
    assert nothing_written()


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../etc/passwd", "", "UTC+2"])
def test_bad_timezone_is_refused_and_writes_nothing(world, demo_job, zone):
    with pytest.raises(ServiceError, match=r"^timezone: .* is not a known time zone"):
        schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron="0 * * * *",
                     timezone=zone)
    assert nothing_written()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"parameters": {"nope": 1}}, "parameters: unknown parameter"),
    ({"parameters": {"min_amount": "lots"}}, "parameters: parameter min_amount must be a number"),
    ({"environment": "qa"}, "environment: unknown environment 'qa'"),
    ({"missed_policy": "sometimes"}, "missed_policy:"),
    ({"late_after_s": "soon"}, "late_after_s:"),
])
def test_other_bad_input_is_refused_and_writes_nothing(world, demo_job, kwargs, message):
    kwargs = {"environment": "dev", "cron": "0 * * * *", **kwargs}
    with pytest.raises(ServiceError, match=f"^{message}"):
        schedule_set(access=world.access("operator"), job=demo_job, **kwargs)
    assert nothing_written()


@pytest.mark.parametrize("persona", ["analyst", "viewer"])
def test_below_operator_may_not_schedule(world, demo_job, persona):
    with pytest.raises(PermissionDenied):
        schedule_set(access=world.access(persona), job=demo_job, environment="dev", cron="0 * * * *")
    assert nothing_written()


def test_set_creates_a_beat_periodic_task_and_an_audit_event(world, demo_job):
    schedule = schedule_set(access=world.access("operator"), job=demo_job, environment="stage",
                            cron="*/15  9-17 * * 1-5", timezone="Europe/Berlin",
                            parameters={"min_amount": "2.5", "source_file": ""}, missed_policy="catch_up")
    schedule.refresh_from_db()
    assert schedule.cron == "*/15 9-17 * * 1-5" and schedule.environment.name == "stage"
    assert schedule.parameters == {"min_amount": 2.5}  # typed; the unset one keeps following the spec
    assert schedule.last_tick_at is not None  # ticks before the schedule existed are not missed ones
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.name == f"schedule:{schedule.pk}" and task.task == "runs.schedule_tasks.schedule_tick"
    assert json.loads(task.kwargs) == {"schedule_id": schedule.pk} and task.enabled
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        "*/15", "9-17", "*", "*", "1-5")
    assert str(cron.timezone) == "Europe/Berlin"
    event = AuditEvent.objects.get(action="schedule.set")
    assert event.actor_user_id == world.users["operator"].pk
    assert event.before is None and event.after["cron"] == schedule.cron


def test_set_again_updates_the_same_task_and_can_disable_it(world, demo_job):
    first = schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron="0 * * * *")
    second = schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron="30 2 * * *",
                          enabled=False)
    assert second.pk == first.pk and JobSchedule.objects.count() == 1
    task = PeriodicTask.objects.get(name__startswith="schedule:")
    assert task.pk == first.periodic_task_id and not task.enabled
    assert (task.crontab.minute, task.crontab.hour) == ("30", "2")
    audit = AuditEvent.objects.filter(action="schedule.set").order_by("id").last()
    assert audit.before["cron"] == "0 * * * *" and audit.after == {**audit.before, "cron": "30 2 * * *",
                                                                   "enabled": False}


def test_delete_removes_the_beat_task_and_keeps_the_runs(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(11, 30))
    [run] = tick(schedule, NOON, django_capture_on_commit_callbacks)
    schedule_delete(access=world.access("operator"), schedule=JobSchedule.objects.get())
    assert not JobSchedule.objects.exists() and not PeriodicTask.objects.filter(name__startswith="schedule:").exists()
    run.refresh_from_db()
    assert run.schedule is None and run.scheduled_for == at(12)
    assert AuditEvent.objects.filter(action="schedule.delete").count() == 1


def test_tick_creates_a_run_for_the_due_tick(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(11, 30), parameters={"min_amount": 5})
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        runs = schedule_tick(schedule_id=schedule.pk, now=NOON)
    [run] = runs
    run.refresh_from_db()
    assert run.schedule_id == schedule.pk and run.scheduled_for == at(12) and run.trigger == Run.Trigger.SCHEDULE
    assert run.environment.name == "dev" and run.parameters["min_amount"] == 5 and not run.late
    assert run.created_by is None and run.created_by_label == "system"
    created = run.events.get(type=EventType.RUN_CREATED)
    assert created.payload["scheduled_for"] == "2025-01-06T12:00:00+00:00"
    assert created.payload["schedule"] == schedule.pk
    assert callbacks  # the run is dispatched once the tick commits
    schedule.refresh_from_db()
    assert schedule.last_tick_at >= NOON


def test_ticking_again_for_the_same_minute_creates_nothing(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(11, 30))
    assert len(tick(schedule, NOON, django_capture_on_commit_callbacks)) == 1
    assert tick(schedule, NOON, django_capture_on_commit_callbacks) == []
    assert tick(schedule, NOON + dt.timedelta(seconds=40), django_capture_on_commit_callbacks) == []
    assert Run.objects.count() == 1


def test_skip_policy_runs_once_for_the_latest_missed_tick(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(9, 30), missed_policy="skip")
    runs = tick(schedule, NOON, django_capture_on_commit_callbacks)
    assert [r.scheduled_for for r in runs] == [at(12)]
    assert list(Run.objects.values_list("scheduled_for", flat=True)) == [at(12)]


def test_catch_up_policy_runs_every_missed_tick_oldest_first(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(9, 30), missed_policy="catch_up")
    runs = tick(schedule, NOON, django_capture_on_commit_callbacks)
    assert [r.scheduled_for for r in runs] == [at(10), at(11), at(12)]
    assert list(Run.objects.order_by("id").values_list("scheduled_for", flat=True)) == [at(10), at(11), at(12)]
    assert tick(schedule, NOON, django_capture_on_commit_callbacks) == []


def test_catch_up_is_capped_and_drains_the_backlog_at_the_next_ticks(world, demo_job, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    monkeypatch.setattr(schedules, "MAX_CATCH_UP", 2)
    schedule = make_schedule(world, demo_job, last_tick_at=at(6, 30), missed_policy="catch_up")
    first = tick(schedule, NOON, django_capture_on_commit_callbacks)
    second = tick(schedule, NOON, django_capture_on_commit_callbacks)
    third = tick(schedule, NOON, django_capture_on_commit_callbacks)
    assert [[r.scheduled_for.hour for r in runs] for runs in (first, second, third)] == [[7, 8], [9, 10], [11, 12]]
    assert tick(schedule, NOON, django_capture_on_commit_callbacks) == []


def test_late_flag_compares_the_delay_with_late_after(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(9, 30), missed_policy="catch_up", late_after_s=300)
    runs = tick(schedule, NOON, django_capture_on_commit_callbacks)
    assert [r.late for r in runs] == [True, True, False]
    assert list(Run.objects.order_by("id").values_list("late", flat=True)) == [True, True, False]
    assert runs[0].events.get(type=EventType.RUN_CREATED).payload["late"] is True


def test_late_boundary_is_exclusive(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(11, 30), late_after_s=60)
    [on_time] = tick(schedule, at(12, 1), django_capture_on_commit_callbacks)  # exactly 60 s: not late
    [late] = tick(schedule, at(13, 1) + dt.timedelta(seconds=1), django_capture_on_commit_callbacks)
    assert (on_time.late, late.late) == (False, True)


def test_disabled_schedule_creates_nothing(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(9, 30), enabled=False)
    assert tick(schedule, NOON, django_capture_on_commit_callbacks) == []
    assert not Run.objects.exists()
    schedule.refresh_from_db()
    assert schedule.last_tick_at == at(9, 30)


def test_re_enabling_does_not_catch_up_the_paused_time(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(9, 30), enabled=False, missed_policy="catch_up")
    schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron="0 * * * *",
                 missed_policy="catch_up")
    schedule.refresh_from_db()
    assert schedule.last_tick_at > NOON  # moved to the real now
    assert tick(schedule, NOON, django_capture_on_commit_callbacks) == []


def test_a_tick_the_job_now_refuses_is_audited_and_passed(world, demo_job, django_capture_on_commit_callbacks):
    schedule = make_schedule(world, demo_job, last_tick_at=at(11, 30))
    JobSchedule.objects.filter(pk=schedule.pk).update(parameters={"dropped_param": 1})  # as if the spec changed
    assert tick(schedule, NOON, django_capture_on_commit_callbacks) == []
    assert not Run.objects.exists()
    failed = AuditEvent.objects.get(action="schedule.tick_failed")
    assert "unknown parameter(s): dropped_param" in failed.after["error"]
    schedule.refresh_from_db()
    assert schedule.last_tick_at >= NOON


def test_ticks_follow_the_schedule_time_zone_and_weekdays():
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer; Monday to Friday only.
    winter = ticks_between(cron="0 9 * * 1-5", zone="Europe/Berlin", start=at(0, day=3), end=at(0, day=7))
    assert winter == [at(8, day=3), at(8, day=6)]  # Friday the 3rd, Monday the 6th
    summer = ticks_between(cron="0 9 * * *", zone="Europe/Berlin", start=dt.datetime(2025, 7, 1, tzinfo=UTC),
                           end=dt.datetime(2025, 7, 2, tzinfo=UTC))
    assert summer == [dt.datetime(2025, 7, 1, 7, tzinfo=UTC)]


def test_celery_task_is_registered_and_calls_the_service(world, demo_job, monkeypatch):
    from controlroom.celery import app
    from runs import schedule_tasks

    task = app.tasks["runs.schedule_tasks.schedule_tick"]
    calls = []
    monkeypatch.setattr(schedule_tasks, "schedule_tick_service", lambda **kwargs: calls.append(kwargs))
    task(17)
    assert calls == [{"schedule_id": 17}]


# The page.

URL = "/w/acme/jobs/medallion/schedule/"
FORM = {"environment": "stage", "action": "save", "cron": "0 6 * * *", "timezone": "Europe/Berlin",
        "missed_policy": "skip", "late_after_s": "120", "enabled": "on", "param_min_amount": "3",
        "param_source_file": ""}


def test_viewer_gets_403_and_outsider_404(world, demo_job):
    assert world.client("viewer").get(URL).status_code == 403
    assert world.client("outsider").get(URL).status_code == 404


def test_analyst_sees_the_page_but_may_not_save(world, demo_job):
    page = world.client("analyst").get(URL)
    assert page.status_code == 200 and b"stage" in page.content and b"Save stage schedule" not in page.content
    assert world.client("analyst").post(URL, FORM).status_code == 403
    assert not JobSchedule.objects.exists()


def test_operator_saves_and_sees_the_schedule(world, demo_job):
    client = world.client("operator")
    response = client.post(URL, FORM)
    assert response.status_code == 302 and response["Location"] == URL
    schedule = JobSchedule.objects.get()
    assert (schedule.environment.name, schedule.cron, schedule.timezone, schedule.late_after_s) == (
        "stage", "0 6 * * *", "Europe/Berlin", 120)
    assert schedule.parameters == {"min_amount": 3} and schedule.enabled
    page = client.get(URL).content.decode()
    assert "Schedule in stage saved" in page and 'value="0 6 * * *"' in page and "Remove" in page


def test_operator_gets_one_clear_error_and_keeps_the_input(world, demo_job):
    response = world.client("operator").post(URL, {**FORM, "cron": "0 25 * * *"})
    page = response.content.decode()
    assert response.status_code == 400 and not JobSchedule.objects.exists()
    assert page.count('class="error"') == 1 and "cron: the hour field &#x27;25&#x27; is not valid" in page
    assert 'value="0 25 * * *"' in page


def test_the_form_reports_every_error_at_once(world, demo_job):
    bad = {**FORM, "cron": "0 25 * * *", "timezone": "Mars/Base", "late_after_s": "soon",
           "param_min_amount": "lots"}
    response = world.client("operator").post(URL, bad)
    page = response.content.decode()
    assert response.status_code == 400 and not JobSchedule.objects.exists()
    section = page[page.index('id="schedule-stage"'):page.index('id="schedule-prod"')]
    assert section.count('class="error"') == 4, section
    for needle in ("hour field", "Mars/Base", "late_after_s:", "min_amount must be a number"):
        assert needle in section
    with pytest.raises(ServiceError) as error:
        schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron="x",
                     timezone="Nowhere", missed_policy="never")
    assert len(error.value.errors) == 3


def test_the_page_shows_the_next_five_fire_times_and_leaves_unscheduled_ones_empty(world, demo_job):
    client = world.client("operator")
    page = client.get(URL).content.decode()
    assert page.count('name="cron" value=""') == 3 and "Next runs" not in page
    client.post(URL, FORM)  # 0 6 * * * in Europe/Berlin, in stage
    page = client.get(URL).content.decode()
    stage = page[page.index('id="schedule-stage"'):page.index('id="schedule-prod"')]
    times = re.findall(r'<time datetime="([^"]+)">([^<]+)</time>', stage)
    assert len(times) == 5
    fires = [dt.datetime.fromisoformat(iso) for iso, _ in times]
    assert all(f.utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2)) for f in fires)  # Berlin
    assert all((f.hour, f.minute) == (6, 0) for f in fires) and fires == sorted(fires)
    assert all(text.endswith("06:00") for _, text in times) and "Next runs (Europe/Berlin)" in stage
    assert page.count('name="cron" value=""') == 2  # dev and prod stay empty


def test_next_fires_match_the_ticks_across_daylight_saving_changes():
    for cron, zone in [("30 2 * * *", "Europe/Berlin"), ("*/7 1-3 * * 0", "Europe/Berlin"),
                       ("30 1 * * *", "America/New_York"), ("*/13 * * * *", "Australia/Lord_Howe")]:
        for start in [dt.datetime(2026, 3, 27, tzinfo=dt.UTC), dt.datetime(2026, 10, 23, tzinfo=dt.UTC),
                      dt.datetime(2026, 11, 1, tzinfo=dt.UTC)]:
            ticks = ticks_between(cron=cron, zone=zone, start=start, end=start + dt.timedelta(days=6))
            fires = next_fires(cron=cron, zone=zone, after=start, count=len(ticks))
            assert [f.astimezone(dt.UTC) for f in fires] == ticks, (cron, zone, start)
    leap = next_fires(cron="0 0 29 2 *", zone="UTC", after=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), count=2)
    assert leap == [dt.datetime(2028, 2, 29, tzinfo=dt.UTC)]  # the search stops five years ahead


def test_operator_removes_a_schedule(world, demo_job):
    client = world.client("operator")
    client.post(URL, FORM)
    response = client.post(URL, {"environment": "stage", "action": "delete"})
    assert response.status_code == 302 and not JobSchedule.objects.exists()


def test_a_cron_longer_than_its_column_is_refused_on_every_database(world, demo_job):
    every_minute = ",".join(str(m) for m in range(60))
    with pytest.raises(ServiceError, match="the limit is 100"):
        schedule_set(access=world.access("operator"), job=demo_job, environment="dev", cron=f"{every_minute} * * * *")
