"""Reads for the ops pages: the workspace overview, each job's health, and a job's grid.

Every read starts from the workspace's own rows (the access), is bounded, and costs a fixed
number of queries however many jobs or runs there are (the pages' tests count them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Count, OuterRef, Prefetch, Q, Subquery
from django.utils import timezone

from controlroom.access import Access
from runs.models import TERMINAL_RUN, Job, JobSchedule, Phase, PhaseState, Run, RunStatus
from runs.services.admission import run_wait_reason
from runs.services.schedules import next_fires

HEALTH_RUNS = 10  # the squares of a job's health strip
GRID_RUNS = 25  # the columns of a job's grid
LIST_CAP = 20  # rows of each overview list


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of an error, cut to ``limit`` characters."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


@dataclass
class LateSchedule:
    schedule: JobSchedule
    expected_at: dt.datetime
    late_by_s: float


@dataclass
class Overview:
    since: dt.datetime
    by_state: dict[str, int]
    failing_jobs: list[Job]
    waiting: list[tuple[Run, str]]
    phases_waiting: int
    oldest_phase_wait_s: float | None
    late_schedules: list[LateSchedule]
    late_runs: list[Run]
    failures: list[tuple[Run, str]]

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


def _last_terminal(field_name: str) -> Subquery:
    return Subquery(Run.objects.filter(job=OuterRef("pk"), status__in=TERMINAL_RUN)
                    .order_by("-id").values(field_name)[:1])


def workspace_overview(*, access: Access, now: dt.datetime | None = None) -> Overview:
    """What an operator looks at first: the last 24 h by state, what fails, waits, is late."""
    now = now or timezone.now()
    since = now - dt.timedelta(hours=24)
    runs = Run.objects.filter(workspace=access.workspace)
    by_state = {state: 0 for state in RunStatus.values}
    by_state.update(runs.filter(created_at__gte=since).values_list("status").annotate(n=Count("id")).order_by())
    failing = list(Job.objects.filter(workspace=access.workspace)
                   .annotate(last_status=_last_terminal("status"), last_run_id=_last_terminal("id"),
                             last_error=_last_terminal("error"))
                   .filter(last_status=RunStatus.FAILED).order_by("-last_run_id")[:LIST_CAP])
    queued = list(runs.filter(status=RunStatus.QUEUED).select_related("job", "environment", "workspace")
                  .order_by("id")[:LIST_CAP])
    claimable = Phase.objects.filter(run__workspace=access.workspace, run__status=RunStatus.RUNNING,
                                     run__cancel_requested=False, state=PhaseState.PENDING, blocked=False).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now))
    oldest = claimable.order_by("run__started_at").values_list("run__started_at", flat=True).first()
    failures = list(runs.filter(status=RunStatus.FAILED).select_related("job", "environment")
                    .prefetch_related(Prefetch("phases", queryset=Phase.objects.filter(state=PhaseState.FAILED)
                                               .order_by("finished_at", "id"), to_attr="failed_phases"))
                    .order_by("-id")[:LIST_CAP // 2])
    return Overview(
        since=since, by_state=by_state, failing_jobs=failing,
        waiting=[(run, run_wait_reason(run)) for run in queued],
        phases_waiting=claimable.count(), oldest_phase_wait_s=(now - oldest).total_seconds() if oldest else None,
        late_schedules=late_schedules(access=access, now=now),
        late_runs=list(runs.filter(late=True, created_at__gte=since).select_related("job", "environment")
                       .order_by("-id")[:LIST_CAP]),
        failures=[(run, _failure_line(run)) for run in failures],
    )


def _failure_line(run: Run) -> str:
    for phase in run.failed_phases:
        if phase.error:
            return f"{phase.name}: {first_line(phase.error)}"
    return first_line(run.error)


def late_schedules(*, access: Access, now: dt.datetime) -> list[LateSchedule]:
    """Enabled schedules whose next tick after the last one is overdue by more than their
    late_after_s: beat is not ticking them (stopped, or the tick keeps failing)."""
    late = []
    schedules = (JobSchedule.objects.filter(job__workspace=access.workspace, enabled=True)
                 .select_related("job", "environment").order_by("id")[:500])
    for schedule in schedules:
        start = schedule.last_tick_at or schedule.created_at
        expected = next_fires(cron=schedule.cron, zone=schedule.timezone, after=start, count=1)
        if expected and (now - expected[0]).total_seconds() > max(schedule.late_after_s, 60):
            late.append(LateSchedule(schedule, expected[0], (now - expected[0]).total_seconds()))
    return late[:LIST_CAP]


@dataclass
class JobHealth:
    recent: list[Run]  # newest first
    next_fire: dt.datetime | None
    schedules: list[JobSchedule] = field(default_factory=list)

    @property
    def last(self) -> Run | None:
        return self.recent[0] if self.recent else None

    @property
    def strip(self) -> list[Run]:
        """Oldest first, as the squares read left to right."""
        return self.recent[::-1]

    @property
    def success_rate(self) -> int | None:
        ended = [r for r in self.recent if r.status in TERMINAL_RUN]
        if not ended:
            return None
        return round(100 * sum(r.status == RunStatus.SUCCEEDED for r in ended) / len(ended))


def jobs_with_health(*, access: Access, limit: int = 500) -> list[Job]:
    """The workspace's jobs, each with ``health`` (its last runs, schedules, next fire): four
    queries whatever the number of jobs."""
    recent = Run.objects.order_by("-id").only("id", "job_id", "status", "created_at", "finished_at", "started_at",
                                              "environment_id").select_related("environment")
    jobs = list(Job.objects.filter(workspace=access.workspace)
                .select_related("current_version", "created_by")
                .prefetch_related(Prefetch("runs", queryset=recent[:HEALTH_RUNS], to_attr="recent_runs"),
                                  Prefetch("schedules", queryset=JobSchedule.objects.select_related("environment")
                                           .order_by("environment_id"), to_attr="all_schedules"))[:limit])
    now = timezone.now()
    for job in jobs:
        fires = [fire for s in job.all_schedules if s.enabled
                 for fire in next_fires(cron=s.cron, zone=s.timezone, after=now, count=1)]
        job.health = JobHealth(recent=job.recent_runs, next_fire=min(fires, default=None),
                               schedules=job.all_schedules)
    return jobs


@dataclass
class Grid:
    runs: list[Run]  # oldest first: columns left to right
    rows: list[tuple[str, list[Phase | None]]]  # phase name, its cell in each run


def job_grid(*, job: Job, before: int | None = None) -> Grid:
    """Runs by phases of ``job`` (Airflow's grid): the newest GRID_RUNS runs (before ``before``),
    one row per phase name of the current version, then any older names the runs still have."""
    runs_qs = job.runs.select_related("environment").order_by("-id")
    if before:
        runs_qs = runs_qs.filter(pk__lt=before)
    runs = list(runs_qs[:GRID_RUNS])[::-1]
    cells: dict[tuple[int, str], Phase] = {}
    names: list[str] = [p["name"] for p in (job.current_version.spec.get("phases") or [])] if job.current_version \
        else []
    for phase in Phase.objects.filter(run__in=[r.pk for r in runs]).only(
            "id", "run_id", "name", "state", "attempt", "max_attempts", "started_at", "finished_at", "error"):
        cells[(phase.run_id, phase.name)] = phase
        if phase.name not in names:
            names.append(phase.name)
    return Grid(runs=runs, rows=[(name, [cells.get((run.pk, name)) for run in runs]) for name in names])
