"""Reads of jobs, runs and events, always inside one workspace (another's objects are 404)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from controlroom.access import Access
from controlroom.models import MAX_DB_ID
from runs.models import Job, Run, RunEvent

LOG_TAIL_LIMIT = 500


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


def run_events_tail(*, run: Run, limit: int = LOG_TAIL_LIMIT) -> list[RunEvent]:
    """The newest ``limit`` events, oldest first: what a log tail opens on."""
    newest = list(run.events.select_related("phase").order_by("-seq")[:limit])
    return newest[::-1]
