"""Admission: a queued run starts only while its job and workspace are under their
concurrency limits; the rest wait, oldest first, and the page says why."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from controlroom.models import Workspace
from runs.models import Run, RunStatus

SCAN = 500


def runs_admit(*, workspace_id: int) -> list[int]:
    """Start the queued runs the limits allow (oldest first); returns the ids started."""
    if not Run.objects.filter(workspace_id=workspace_id, status=RunStatus.QUEUED).exists():
        return []  # nobody waits: no workspace lock (one probe of the queued-runs index)
    admitted: list[int] = []
    with transaction.atomic():
        workspace = Workspace.objects.select_for_update().get(pk=workspace_id)  # one admitter at a time
        queued = list(Run.objects.filter(workspace=workspace, status=RunStatus.QUEUED, cancel_requested=False)
                      .select_related("job").order_by("id")[:SCAN])
        if not queued:
            return []
        running = Run.objects.filter(workspace=workspace, status=RunStatus.RUNNING)
        total = running.count()
        per_job = dict(running.values_list("job_id").annotate(n=Count("id")).values_list("job_id", "n"))
        now = timezone.now()
        for run in queued:
            if workspace.max_concurrent_runs is not None and total >= workspace.max_concurrent_runs:
                break
            limit = run.job.max_concurrent_runs
            if limit is not None and per_job.get(run.job_id, 0) >= limit:
                continue
            if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING,
                                                                                started_at=now):
                admitted.append(run.pk)
                total += 1
                per_job[run.job_id] = per_job.get(run.job_id, 0) + 1
    return admitted


def run_wait_reason(run: Run) -> str:
    """Why a queued run has not started yet, for the run page ('' when it is not waiting)."""
    if run.status != RunStatus.QUEUED:
        return ""
    running = Run.objects.filter(workspace_id=run.workspace_id, status=RunStatus.RUNNING)
    limit = run.job.max_concurrent_runs
    if limit is not None and running.filter(job_id=run.job_id).count() >= limit:
        ahead = Run.objects.filter(job_id=run.job_id, status=RunStatus.QUEUED, pk__lt=run.pk).count()
        return f"waiting for a slot: {limit} of {limit} runs of this job are running; {ahead} queued ahead"
    ws_limit = run.workspace.max_concurrent_runs
    if ws_limit is not None and running.count() >= ws_limit:
        return f"waiting for a slot: the workspace runs at most {ws_limit} runs at once"
    return "waiting for a worker to start it"
