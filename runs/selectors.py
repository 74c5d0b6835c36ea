"""Reads of jobs, runs and events, always inside one workspace (another's objects are 404)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import Http404, QueryDict

from controlroom.access import Access
from controlroom.ids import id_parse
from controlroom.models import MAX_DB_ID
from runs.models import Job, Run, RunEvent, RunStatus

LOG_TAIL_LIMIT = 500
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


def job_list(*, access: Access) -> QuerySet[Job]:
    return Job.objects.filter(workspace=access.workspace).select_related("current_version")


def job_get(*, access: Access, slug: str) -> Job:
    job = job_list(access=access).filter(slug=slug).first()
    if job is None:
        raise Http404(f"No job named '{slug}' in this workspace.")
    return job


def run_list(*, access: Access, job: Job | None = None, status: str = "") -> QuerySet[Run]:
    runs = Run.objects.filter(workspace=access.workspace).select_related("job", "job_version", "environment")
    if job is not None:
        runs = runs.filter(job=job)
    if status:
        runs = runs.filter(status=status)
    return runs.order_by("-id")


def run_get(*, access: Access, run_id: int | str) -> Run:
    try:
        run_id = int(run_id)
    except (TypeError, ValueError):
        raise Http404("Unknown run id.") from None
    if not 0 < run_id <= MAX_DB_ID:
        raise Http404("Unknown run id.")
    run = run_list(access=access).filter(pk=run_id).first()
    if run is None:
        raise Http404(f"No run {run_id} in this workspace.")
    return run


def run_events(*, run: Run, after: int = 0, limit: int = LOG_TAIL_LIMIT) -> list[RunEvent]:
    """Events after sequence ``after``, oldest first, at most ``limit``."""
    return list(run.events.filter(seq__gt=after).select_related("phase").order_by("seq")[:limit])


@dataclass(frozen=True)
class RunFilters:
    status: str = ""
    job: str = ""
    environment: str = ""
    trigger: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    before: int | None = None

    @classmethod
    def from_query(cls, query: QueryDict) -> tuple[RunFilters, str]:
        """Filters from a query string; each bad value is dropped and named in the message."""
        problems: list[str] = []
        dates: dict[str, dt.date | None] = {}
        for key in ("from", "to"):
            try:
                dates[key] = dt.date.fromisoformat(query[key]) if query.get(key) else None
            except ValueError:
                dates[key] = None
                problems.append(f"'{key}' must be a date as YYYY-MM-DD")

        def choice(key: str, allowed: list[str]) -> str:
            value = query.get(key, "")
            if value and value not in allowed:
                problems.append(f"'{key}' must be one of {', '.join(allowed)}")
                return ""
            return value

        status = choice("status", list(RunStatus.values))
        trigger = choice("trigger", list(Run.Trigger.values))
        environment = choice("environment", ["dev", "stage", "prod"])
        job = query.get("job", "")
        if job and not SLUG.fullmatch(job):
            problems.append("'job' must be a job's name (letters, digits, - and _)")
            job = ""
        raw_before = query.get("before", "")
        before = id_parse(raw_before, minimum=0)
        if raw_before and before is None:
            problems.append("'before' must be a run number")
        if dates["from"] and dates["to"] and dates["from"] > dates["to"]:
            problems.append("'from' is after 'to'")
        error = f"Ignored: {'; '.join(problems)}." if problems else ""
        return cls(status=status, job=job, environment=environment, trigger=trigger,
                   date_from=dates["from"], date_to=dates["to"], before=before), error

    def query_string(self) -> str:
        """The filters (not the cursor) as a query string, for the next-page link."""
        names = {"date_from": "from", "date_to": "to"}
        pairs = {names.get(f.name, f.name): getattr(self, f.name) for f in fields(self) if f.name != "before"}
        return urlencode({k: v for k, v in pairs.items() if v})


def run_history(*, access: Access, filters: RunFilters) -> QuerySet[Run]:
    runs = run_list(access=access, status=filters.status)
    if filters.job:
        runs = runs.filter(job__slug=filters.job)
    if filters.environment:
        runs = runs.filter(environment__name=filters.environment)
    if filters.trigger:
        runs = runs.filter(trigger=filters.trigger)
    if filters.date_from:
        runs = runs.filter(created_at__date__gte=filters.date_from)
    if filters.date_to:
        runs = runs.filter(created_at__date__lte=filters.date_to)
    if filters.before:
        runs = runs.filter(pk__lt=filters.before)
    return runs
