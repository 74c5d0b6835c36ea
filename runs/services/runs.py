"""Creating runs and settling their final state."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlroom.access import Access
from controlroom.audit import audit_record
from controlroom.models import Environment, Role, Workspace
from controlroom.request_id import get_request_id
from controlroom.services import ServiceError
from runs.hooks import run_settled
from runs.models import TERMINAL_PHASE, EventType, Job, JobVersion, Phase, PhaseState, Run, RunStatus
from runs.services.events import event_append
from runs.spec import phases_of, resolve_parameters


def run_trigger_check(*, access: Access, environment: Environment) -> None:
    """Who may start runs: operators and admins; in prod only admins, unless the workspace lets
    operators (``operators_run_in_prod``). Every trigger passes here: UI, API, schedules, reruns."""
    access.require(Role.OPERATOR)
    if environment.name == Environment.Name.PROD and not access.can(Role.ADMIN):
        if not Workspace.objects.filter(pk=access.workspace.pk, operators_run_in_prod=True).exists():
            raise PermissionDenied("Only workspace admins may start runs in prod; an admin can let operators "
                                   "do it in the workspace's settings.")


def _fingerprint(**request: Any) -> str:
    """What a keyed request asked for, canonically: the same key must always ask for the same."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _replay(run: Run, fingerprint: str) -> Run:
    if run.idempotency_fingerprint and run.idempotency_fingerprint != fingerprint:
        raise ServiceError("This Idempotency-Key was used for a different request (another job, environment, "
                           "parameters or inputs); use a new key.", code="idempotency_key_reused")
    run.replayed = True
    return run


def run_create(
    *, access: Access, job: Job, environment: str = "dev", parameters: dict[str, Any] | None = None,
    trigger: str = Run.Trigger.UI, idempotency_key: str | None = None, input_manifest: dict | None = None,
    **fields: Any,
) -> Run:
    """Create a run of the job's current version with its phases, then wake a worker.

    With an idempotency key, a repeated request (also a concurrent one) returns the run the first
    one created, marked ``replayed``; the same key with a different request is refused."""
    access.require(Role.OPERATOR)
    fingerprint = _fingerprint(job=job.pk, environment=environment, parameters=parameters or {},
                               input_manifest=input_manifest or {}) if idempotency_key else ""
    if idempotency_key:
        existing = Run.objects.filter(workspace=access.workspace, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, fingerprint)
    version = job.current_version
    if version is None:
        raise ServiceError("This job has no version to run.")
    env = Environment.objects.filter(workspace=access.workspace, name=environment).first()
    if env is None:
        raise ServiceError(f"Unknown environment '{environment}'; use dev, stage or prod.")
    resolved = resolve_parameters(version.spec, parameters)
    try:
        with transaction.atomic():
            run = run_insert(access=access, version=version, environment=env, parameters=resolved, trigger=trigger,
                             idempotency_key=idempotency_key or None, idempotency_fingerprint=fingerprint,
                             input_manifest=input_manifest or {}, **fields)
    except IntegrityError:
        # A concurrent request with the same key committed first (the unique constraint decided):
        # this one is a replay of it.
        existing = Run.objects.filter(workspace=access.workspace, idempotency_key=idempotency_key).first() \
            if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    _admit_and_dispatch(workspace_id=run.workspace_id)
    run.refresh_from_db()
    run.replayed = False
    return run


def run_insert(*, access: Access, version: JobVersion, environment: Environment, parameters: dict[str, Any],
               trigger: str, **fields: Any) -> Run:
    """Write a run of ``version`` with its pending phases, its RUN_CREATED event and its audit
    event. Call inside a transaction; parameters must already be resolved."""
    run_trigger_check(access=access, environment=environment)
    job = version.job
    run = Run.objects.create(
        workspace=access.workspace, environment=environment, job=job, job_version=version, parameters=parameters,
        git_sha=version.git_sha, trigger=trigger, created_by=access.user if access.token is None else None,
        created_by_label=access.label, request_id=get_request_id() or "", **fields,
    )
    Phase.objects.bulk_create(
        Phase(run=run, name=p.name, position=i, kind=p.kind, config=p.config, depends_on=list(p.depends_on),
              max_attempts=p.max_attempts, timeout_s=p.timeout_s, blocked=bool(p.depends_on))
        for i, p in enumerate(phases_of(version.spec))
    )
    origin: dict[str, Any] = {}
    if run.schedule_id:
        origin = {"schedule": run.schedule_id, "scheduled_for": run.scheduled_for.isoformat(), "late": run.late}
    if run.rerun_of_id:
        origin = {"rerun_of": run.rerun_of_id, "rerun_mode": run.rerun_mode}
    event_append(run=run, type=EventType.RUN_CREATED,
                 message=f"run of {job.slug} v{version.number} in {environment.name} by {access.label}",
                 payload={"parameters": parameters, "version": version.number, "git_sha": version.git_sha, **origin})
    audit_record(access=access, action="run.create", target=run,
                 after={"job": job.slug, "version": version.number, "environment": environment.name,
                        "parameters": parameters, "trigger": trigger})
    return run


def _admit_and_dispatch(*, workspace_id: int) -> None:
    from runs.services.admission import runs_admit
    from runs.tasks import run_dispatch

    for run_id in runs_admit(workspace_id=workspace_id):
        transaction.on_commit(lambda run_id=run_id: run_dispatch.delay(run_id))


def run_settle(*, run_id: int) -> Run:
    """Skip phases that can no longer run, and end the run once every phase has ended."""
    with transaction.atomic():
        run = Run.objects.select_for_update(of=("self",)).select_related("workspace").get(pk=run_id)
        if run.is_terminal:
            return run
        # Plain rows, not model instances: a run has up to hundreds of phases and this runs at
        # the end of every run (it was 17 ms of a 100-phase run's client time).
        phases = list(run.phases.values_list("pk", "name", "state", "depends_on", "error"))
        state = {name: st for _, name, st, _, _ in phases}
        changed = True
        while changed:
            changed = False
            for pk, name, _, depends_on, _ in phases:
                if state[name] != PhaseState.PENDING:
                    continue
                blocked = [d for d in depends_on if state[d] in (PhaseState.FAILED, PhaseState.SKIPPED,
                                                                 PhaseState.CANCELLED)]
                if run.cancel_requested:
                    blocked = blocked or ["the run was cancelled"]
                if blocked and Phase.objects.filter(pk=pk, state=PhaseState.PENDING).update(
                    state=PhaseState.SKIPPED, finished_at=timezone.now()
                ):
                    state[name] = PhaseState.SKIPPED
                    event_append(run=run, phase=Phase(pk=pk, run_id=run.pk, name=name),
                                 type=EventType.PHASE_SKIPPED,
                                 message=f"{name} skipped: {', '.join(blocked)} did not succeed")
                    changed = True
        if not all(s in TERMINAL_PHASE for s in state.values()):
            return run
        ok = all(s == PhaseState.SUCCEEDED for s in state.values())
        run.status = RunStatus.SUCCEEDED if ok else RunStatus.CANCELLED if run.cancel_requested else RunStatus.FAILED
        run.finished_at = timezone.now()
        run.started_at = run.started_at or run.finished_at
        failed = [(name, error) for _, name, st, _, error in phases if st == PhaseState.FAILED]
        run.error = "" if ok else "; ".join(f"{name}: {error}" for name, error in failed)[:2000]
        run.output_manifest = {"artifacts": dict(run.artifacts.order_by("id").values_list("name", "sha256"))}
        run.save(update_fields=["status", "finished_at", "started_at", "error", "output_manifest"])
        kind = {RunStatus.SUCCEEDED: EventType.RUN_SUCCEEDED, RunStatus.CANCELLED: EventType.RUN_CANCELLED,
                RunStatus.FAILED: EventType.RUN_FAILED}[run.status]
        message = {RunStatus.SUCCEEDED: "run succeeded", RunStatus.CANCELLED: "run cancelled",
                   RunStatus.FAILED: f"run failed: {run.error}"}[run.status]
        event_append(run=run, type=kind, level="info" if ok else "error", message=message,
                     payload={"duration_s": run.duration_s})
        audit_record(access=None, workspace=run.workspace, action=f"run.{run.status}", target=run,
                     after={"status": run.status}, request_id=run.request_id)
        run_settled(run)  # subscribers (notifications) write in this transaction
    _admit_and_dispatch(workspace_id=run.workspace_id)  # a slot is free: start who waits
    return run


def run_cancel(*, access: Access, run: Run) -> Run:
    """Cancel a run: pending phases end now; running ones learn it at their next heartbeat."""
    access.require(Role.OPERATOR)
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.is_terminal:
            raise ServiceError(f"Run {run.pk} has already ended ({locked.status}).", code="conflict")
        if locked.cancel_requested:
            return locked
        locked.cancel_requested = True
        locked.save(update_fields=["cancel_requested"])
        now = timezone.now()
        for phase in locked.phases.filter(state=PhaseState.PENDING):
            if Phase.objects.filter(pk=phase.pk, state=PhaseState.PENDING).update(
                state=PhaseState.CANCELLED, finished_at=now
            ):
                event_append(run=locked, phase=phase, type=EventType.PHASE_CANCELLED, level="warning",
                             message=f"{phase.name} cancelled before it started")
        audit_record(access=access, action="run.cancel", target=locked, before={"status": locked.status},
                     after={"cancel_requested": True})
    return run_settle(run_id=run.pk)
