"""Cron schedules of jobs: their django-celery-beat entries, and the ticks that create runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.timezone import now as utc_now
from django_celery_beat import validators as beat_validators
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from controlroom.access import Access, system_access
from controlroom.audit import audit_record
from controlroom.limits import require_text
from controlroom.models import Environment, Role
from controlroom.services import ServiceError
from runs.models import Job, JobSchedule, Run
from runs.services.runs import run_create, run_trigger_check
from runs.spec import SpecError, resolve_parameters

log = logging.getLogger(__name__)

TICK_TASK = "runs.schedule_tasks.schedule_tick"
# How far back a tick looks for missed cron minutes; older ones are dropped.
MAX_LOOKBACK = dt.timedelta(days=7)
# Most runs one tick creates when catching up; the rest follow at the next ticks, oldest first.
MAX_CATCH_UP = 100
# Beat's clock and the worker's may disagree slightly: a tick fired just before the minute still counts.
EARLY_GRACE = dt.timedelta(seconds=5)

# (name used in messages, celery crontab argument, django-celery-beat validator)
CRON_FIELDS = (
    ("minute", "minute", beat_validators.minute_validator),
    ("hour", "hour", beat_validators.hour_validator),
    ("day of month", "day_of_month", beat_validators.day_of_month_validator),
    ("month", "month_of_year", beat_validators.month_of_year_validator),
    ("day of week", "day_of_week", beat_validators.day_of_week_validator),
)


def cron_parse(cron: str) -> crontab:
    """A 5-field cron expression as a celery crontab, or a ServiceError naming the bad field."""
    parts = str(cron or "").split()
    if len(parts) != 5:
        raise ServiceError(
            f"cron: '{cron}' needs 5 fields (minute hour day-of-month month day-of-week), e.g. '0 * * * *'."
        )
    kwargs: dict[str, str] = {}
    for (label, arg, validator), value in zip(CRON_FIELDS, parts, strict=True):
        try:
            validator(value)
            crontab(**{arg: value})  # beat evaluates with celery, which is stricter (no 7 for Sunday)
        except (ValidationError, ValueError) as exc:
            reason = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
            raise ServiceError(f"cron: the {label} field '{value}' is not valid ({reason}).") from None
        kwargs[arg] = value
    return crontab(**kwargs)


class ScheduleInvalid(ServiceError):
    """Every problem of a schedule form, each one sentence (``errors``), not only the first."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(" ".join(errors))
        self.errors = errors


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ServiceError(f"timezone: '{name}' is not a known time zone (use a name like UTC or "
                           "Europe/Berlin).") from None


def _schedule_state(schedule: JobSchedule) -> dict[str, Any]:
    return {"job": schedule.job.slug, "environment": schedule.environment.name, "cron": schedule.cron,
            "timezone": schedule.timezone, "parameters": schedule.parameters,
            "missed_policy": schedule.missed_policy, "late_after_s": schedule.late_after_s,
            "enabled": schedule.enabled}


def schedule_set(
    *, access: Access, job: Job, environment: str, cron: str, timezone: str = "UTC",
    parameters: dict[str, Any] | None = None, missed_policy: str = JobSchedule.Missed.SKIP,
    late_after_s: int = 300, enabled: bool = True,
) -> JobSchedule:
    """Create or change the job's schedule in one environment, and its django-celery-beat entry.

    Parameters are checked against the job's current spec now; only the given ones are stored,
    so the others keep following the spec's defaults."""
    access.require(Role.OPERATOR)
    if job.workspace_id != access.workspace.pk:
        raise ServiceError("This job is not in this workspace.", code="not_found")
    env = Environment.objects.filter(workspace=access.workspace, name=environment).first()
    if env is None:
        raise ServiceError(f"environment: unknown environment '{environment}'; use dev, stage or prod.")
    # Whoever sets a schedule triggers its runs: the prod rule applies to them now (ticks run as
    # the platform).
    run_trigger_check(access=access, environment=env)
    if job.current_version is None:
        raise ServiceError("This job has no version to schedule.")
    errors: list[str] = []  # every problem at once, as a form shows them
    cron = " ".join(str(cron or "").split())
    timezone = str(timezone or "").strip()
    for field, value, parse in (("cron", cron, cron_parse), ("timezone", timezone, _zone)):
        try:
            parse(require_text(JobSchedule, field, value))
        except ServiceError as exc:
            errors.append(str(exc))
    if missed_policy not in JobSchedule.Missed.values:
        errors.append(f"missed_policy: use one of {', '.join(JobSchedule.Missed.values)}.")
    try:
        late_after_s = int(late_after_s)
        if not 0 <= late_after_s <= 7 * 86400:
            errors.append("late_after_s: give between 0 seconds and 7 days.")
    except (TypeError, ValueError):
        errors.append("late_after_s: give a whole number of seconds.")
    given = {k: v for k, v in (parameters or {}).items() if v not in (None, "")}
    resolved: dict[str, Any] = {}
    try:
        resolved = resolve_parameters(job.current_version.spec, given)
    except SpecError as exc:
        errors.extend(f"parameters: {e}" for e in (exc.errors or [str(exc)]))
    if errors:
        raise ScheduleInvalid(errors)
    stored = {name: resolved[name] for name in given}

    with transaction.atomic():
        schedule = JobSchedule.objects.select_for_update().filter(job=job, environment=env).first()
        before = _schedule_state(schedule) if schedule else None
        now = utc_now()
        if schedule is None:
            schedule = JobSchedule(job=job, environment=env, last_tick_at=now)
        elif enabled and not schedule.enabled:
            schedule.last_tick_at = now  # re-enabling does not catch up the paused time
        schedule.cron, schedule.timezone, schedule.parameters = cron, timezone, stored
        schedule.missed_policy, schedule.late_after_s, schedule.enabled = missed_policy, late_after_s, enabled
        schedule.save()
        minute, hour, day_of_month, month_of_year, day_of_week = cron.split()
        beat_crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
            day_of_week=day_of_week, timezone=ZoneInfo(timezone),
        )
        task = schedule.periodic_task or PeriodicTask(name=f"schedule:{schedule.pk}")
        task.task, task.crontab, task.enabled = TICK_TASK, beat_crontab, enabled
        task.kwargs = json.dumps({"schedule_id": schedule.pk})
        task.description = f"{job.workspace.slug}/{job.slug} in {env.name}: {cron} ({timezone})"
        task.save()
        if schedule.periodic_task_id != task.pk:
            schedule.periodic_task = task
            schedule.save(update_fields=["periodic_task"])
        audit_record(access=access, action="schedule.set", target=schedule, before=before,
                     after=_schedule_state(schedule))
    return schedule


def schedule_list(*, access: Access, job: Job) -> list[JobSchedule]:
    """The job's schedules (one per environment at most). A read: it belongs in selectors."""
    if job.workspace_id != access.workspace.pk:
        return []
    return list(JobSchedule.objects.filter(job=job).select_related("environment").order_by("environment_id"))


def schedule_pause(*, access: Access, schedule: JobSchedule, paused: bool) -> JobSchedule:
    """Pause or resume a schedule (its beat entry too). Resuming does not catch up the paused time."""
    access.require(Role.OPERATOR)
    if schedule.job.workspace_id != access.workspace.pk:
        raise ServiceError("This schedule is not in this workspace.", code="not_found")
    if not paused:
        run_trigger_check(access=access, environment=schedule.environment)
    with transaction.atomic():
        locked = JobSchedule.objects.select_for_update().select_related("job", "environment").get(pk=schedule.pk)
        if locked.enabled == (not paused):
            return locked
        before = _schedule_state(locked)
        locked.enabled = not paused
        if locked.enabled:
            locked.last_tick_at = utc_now()
        locked.save(update_fields=["enabled", "last_tick_at"])
        task = PeriodicTask.objects.filter(pk=locked.periodic_task_id).first()
        if task is not None:  # save(), not update(): beat learns of changes from the save signal
            task.enabled = locked.enabled
            task.save()
        audit_record(access=access, action="schedule.resume" if locked.enabled else "schedule.pause",
                     target=locked, before=before, after=_schedule_state(locked))
    return locked


def schedule_delete(*, access: Access, schedule: JobSchedule) -> None:
    """Remove a schedule and its django-celery-beat entry; its past runs stay."""
    access.require(Role.OPERATOR)
    if schedule.job.workspace_id != access.workspace.pk:
        raise ServiceError("This schedule is not in this workspace.", code="not_found")
    with transaction.atomic():
        audit_record(access=access, action="schedule.delete", target=schedule, before=_schedule_state(schedule))
        task_id = schedule.periodic_task_id
        schedule.delete()
        if task_id is not None:
            PeriodicTask.objects.filter(pk=task_id).delete()


def ticks_between(*, cron: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The cron's minutes in (start, end], as aware UTC datetimes, oldest first.

    Fields are matched in the schedule's time zone with celery's semantics (day of month AND
    day of week must both match), so these are the minutes beat fires on."""
    fields = cron_parse(cron)
    tz = ZoneInfo(zone)
    start = max(start, end - MAX_LOOKBACK).astimezone(dt.UTC)
    minute = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    ticks: list[dt.datetime] = []
    while minute <= end:
        local = minute.astimezone(tz)
        if (local.minute in fields.minute and local.hour in fields.hour and local.day in fields.day_of_month
                and local.month in fields.month_of_year and local.isoweekday() % 7 in fields.day_of_week):
            ticks.append(minute)
        minute += dt.timedelta(minutes=1)
    return ticks


def next_fires(*, cron: str, zone: str, after: dt.datetime, count: int = 5) -> list[dt.datetime]:
    """The next ``count`` minutes the cron fires after ``after``, as aware datetimes in ``zone``.

    The same minutes as ticks_between (a wall time a DST gap skips never fires; one a DST
    overlap repeats fires twice), found day by day so a yearly cron costs no minute-by-minute walk."""
    fields, tz = cron_parse(cron), ZoneInfo(zone)
    after = after.astimezone(dt.UTC)
    day = after.astimezone(tz).date()
    fires: list[dt.datetime] = []
    for _ in range(366 * 5):  # five years: enough for any cron that fires at all (29 February)
        if (day.day in fields.day_of_month and day.month in fields.month_of_year
                and day.isoweekday() % 7 in fields.day_of_week):
            instants = set()  # of this day, sorted in time (an overlap's second pass comes last)
            for hour in fields.hour:
                for minute in fields.minute:
                    wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                    instants |= {instant for instant in (wall.replace(tzinfo=tz, fold=f).astimezone(dt.UTC)
                                                         for f in (0, 1))
                                 if instant > after and instant.astimezone(tz).replace(tzinfo=None) == wall}
            fires.extend(instant.astimezone(tz) for instant in sorted(instants))
            if len(fires) >= count:
                return fires[:count]
        day += dt.timedelta(days=1)
    return fires


def schedule_tick(*, schedule_id: int, now: dt.datetime | None = None) -> list[Run]:
    """Create the runs due since the schedule's last tick; returns the runs created.

    ``skip`` makes one run for the latest due tick; ``catch_up`` one run per missed tick, oldest
    first, at most MAX_CATCH_UP per call. The schedule row is locked and its last tick moved in
    the same transaction, so a repeated or concurrent tick creates nothing twice."""
    now = now or utc_now()
    with transaction.atomic():
        schedule = (JobSchedule.objects.select_for_update().select_related("job__workspace", "environment")
                    .filter(pk=schedule_id).first())
        if schedule is None or not schedule.enabled:
            return []
        end = now + EARLY_GRACE
        start = schedule.last_tick_at or schedule.created_at
        ticks = ticks_between(cron=schedule.cron, zone=schedule.timezone, start=start, end=end)
        if schedule.missed_policy == JobSchedule.Missed.CATCH_UP:
            due, backlog = ticks[:MAX_CATCH_UP], len(ticks) > MAX_CATCH_UP
        else:
            due, backlog = ticks[-1:], False
        schedule.last_tick_at = due[-1] if backlog else max(end, schedule.last_tick_at or end)
        schedule.save(update_fields=["last_tick_at"])
        runs = [run for tick in due if (run := _tick_run(schedule=schedule, tick=tick, now=now)) is not None]
    return runs


def _tick_run(*, schedule: JobSchedule, tick: dt.datetime, now: dt.datetime) -> Run | None:
    access = system_access(schedule.job.workspace)
    late = (now - tick).total_seconds() > schedule.late_after_s
    try:
        with transaction.atomic():
            run = run_create(access=access, job=schedule.job, environment=schedule.environment.name,
                             parameters=schedule.parameters, trigger=Run.Trigger.SCHEDULE, schedule=schedule,
                             scheduled_for=tick, late=late)
    except (ServiceError, SpecError) as exc:
        # A job edited since the schedule was saved may refuse its parameters: record it and move
        # on, or every later tick would fail the same way without a trace.
        log.warning("schedule %s: tick %s created no run: %s", schedule.pk, tick.isoformat(), exc)
        audit_record(access=access, action="schedule.tick_failed", target=schedule,
                     after={"scheduled_for": tick.isoformat(), "error": str(exc)})
        return None
    run.schedule, run.scheduled_for, run.late = schedule, tick, late
    return run
