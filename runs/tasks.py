"""Celery tasks: thin wrappers that load ids and call services. Messages are wake-ups only."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.utils import timezone

from runs.kinds import KIND_QUEUES
from runs.models import Run, RunStatus
from runs.services.admission import runs_admit
from runs.services.gitdeliveries import git_deliveries_stalled
from runs.services.phases import phase_execute as phase_execute_service
from runs.services.phases import phases_reap, runnable_phases, runs_stalled


def worker_id() -> str:
    """Names the process that holds a lease (prefork children differ by pid)."""
    return f"celery@{socket.gethostname()}:{os.getpid()}"


@shared_task(acks_late=True, ignore_result=True)
def run_dispatch(run_id: int) -> None:
    """Enqueue every runnable phase of the run (at its due time for retries)."""
    now = timezone.now()
    for phase in runnable_phases(run_id=run_id):
        eta = phase.not_before if phase.not_before and phase.not_before > now else None
        phase_execute.apply_async((phase.pk,), eta=eta, queue=KIND_QUEUES.get(phase.kind))


@shared_task(acks_late=True, ignore_result=True)
def phase_execute(phase_id: int) -> None:
    phase = phase_execute_service(phase_id=phase_id, worker=worker_id())
    if phase is not None:
        run_dispatch(phase.run_id)


@shared_task(ignore_result=True)
def reap_expired_leases() -> None:
    """Beat, every few seconds: requeue lost work and wake what a lost message left asleep."""
    touched = set(phases_reap()) | set(runs_stalled())
    for workspace_id in Run.objects.filter(status=RunStatus.QUEUED).values_list("workspace_id", flat=True).distinct():
        touched |= set(runs_admit(workspace_id=workspace_id))
    for run_id in sorted(touched):
        run_dispatch(run_id)
    for delivery_pk in git_deliveries_stalled():
        git_tasks.git_delivery_process.delay(delivery_pk)


from runs import git_tasks, schedule_tasks  # noqa: E402, F401  (registers their tasks)
