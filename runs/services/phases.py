"""The phase lifecycle: claim with a lease (fencing token), execute, complete, reap.

A claim is one conditional UPDATE ... WHERE state='pending': exactly one caller can change
the row, so a message delivered twice runs the phase once. Every later write names the lease
token; a worker whose lease was taken over (the token changed) can write nothing.
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.models import EventType, Phase, PhaseState, Run, RunStatus
from runs.services.events import StaleLease, event_append
from runs.services.runs import run_settle

log = logging.getLogger(__name__)
LEASE_GRACE_S = 60
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0


def runnable_phases(*, run_id: int) -> list[Phase]:
    """Pending phases whose dependencies all succeeded (due time not considered)."""
    phases = list(Phase.objects.filter(run_id=run_id))
    done = {p.name for p in phases if p.state == PhaseState.SUCCEEDED}
    return [p for p in phases if p.state == PhaseState.PENDING and set(p.depends_on) <= done]


def phase_claim(*, phase_id: int, worker: str) -> tuple[Phase, str] | None:
    """Take the phase if it is pending, due and unblocked; returns (phase, lease token) or None."""
    now = timezone.now()
    with transaction.atomic():
        phase = Phase.objects.select_related("run").filter(pk=phase_id).first()
        if phase is None or phase.run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            return None
        if phase.id not in {p.id for p in runnable_phases(run_id=phase.run_id)}:
            return None
        token = uuid.uuid4().hex
        claimed = (
            Phase.objects.filter(pk=phase_id, state=PhaseState.PENDING)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .update(
                state=PhaseState.RUNNING, attempt=F("attempt") + 1, lease_token=token, worker=worker,
                lease_expires_at=now + timedelta(seconds=phase.timeout_s + LEASE_GRACE_S),
                started_at=now, finished_at=None, error="",
            )
        )
        if claimed != 1:
            return None
        Run.objects.filter(pk=phase.run_id, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING, started_at=now)
        phase.refresh_from_db()
        event_append(run=phase.run, phase=phase, type=EventType.PHASE_CLAIMED,
                     message=f"{phase.name} claimed by {worker} (attempt {phase.attempt}/{phase.max_attempts})",
                     payload={"attempt": phase.attempt, "worker": worker})
    return phase, token


def retry_delay_s(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


def phase_complete(
    *, phase: Phase, lease_token: str, succeeded: bool, error: str = "", output: dict[str, Any] | None = None
) -> Phase:
    """Record the outcome under the live lease; retry if attempts remain; settle the run."""
    now = timezone.now()
    with transaction.atomic():
        current = Phase.objects.select_for_update().filter(
            pk=phase.pk, lease_token=lease_token, state=PhaseState.RUNNING
        ).first()
        if current is None:
            raise StaleLease(f"phase {phase.pk}: lease token is no longer valid")
        duration = (now - current.started_at).total_seconds() if current.started_at else None
        if succeeded:
            current.state, current.output = PhaseState.SUCCEEDED, output or {}
            event = (EventType.PHASE_SUCCEEDED, "info", f"{current.name} succeeded in {duration:.2f} s")
        elif current.attempt < current.max_attempts:
            delay = retry_delay_s(current.attempt)
            current.state, current.not_before = PhaseState.PENDING, now + timedelta(seconds=delay)
            event = (EventType.PHASE_RETRY_SCHEDULED, "warning",
                     f"{current.name} failed: {error}; retry {current.attempt + 1}/{current.max_attempts} "
                     f"at {current.not_before:%H:%M:%S}")
        else:
            current.state = PhaseState.FAILED
            event = (EventType.PHASE_FAILED, "error", f"{current.name} failed: {error}")
        current.error, current.finished_at, current.lease_token = error[:4000], now, ""
        current.lease_expires_at = None
        current.save()
        payload: dict[str, Any] = {"attempt": current.attempt, "duration_s": duration}
        if current.not_before and current.state == PhaseState.PENDING:
            payload["due"] = current.not_before.isoformat()
        event_append(run=current.run, phase=current, type=event[0], level=event[1], message=event[2],
                     payload=payload)
    run_settle(run_id=current.run_id)
    return current


def phase_execute(*, phase_id: int, worker: str) -> Phase | None:
    """Claim and run one phase in this process. Returns None if another worker has it."""
    from runs.executors import PhaseContext, PhaseFailure, execute

    claim = phase_claim(phase_id=phase_id, worker=worker)
    if claim is None:
        return None
    phase, token = claim
    ctx = PhaseContext(phase=phase, lease_token=token)
    event_append(run=phase.run, phase=phase, type=EventType.PHASE_STARTED,
                 message=f"{phase.name} started ({phase.kind})")
    try:
        output = execute(ctx)
        output = {**output, "artifacts": ctx.outputs} if ctx.outputs else output
        return phase_complete(phase=phase, lease_token=token, succeeded=True, output=output)
    except StaleLease:
        log.warning("lease lost while running phase", extra={"phase_id": phase_id, "run_id": phase.run_id})
        return None
    except PhaseFailure as exc:
        return phase_complete(phase=phase, lease_token=token, succeeded=False, error=str(exc))
    except Exception as exc:  # an executor bug: keep the detail in the log, tell the user briefly
        log.exception("phase executor crashed", extra={"phase_id": phase_id, "run_id": phase.run_id})
        error = f"internal error in the {phase.kind} executor ({type(exc).__name__}); see the worker log"
        return phase_complete(phase=phase, lease_token=token, succeeded=False, error=error)
    finally:
        ctx.cleanup()


def phases_reap_expired() -> list[int]:
    """Requeue (or fail) running phases whose lease expired; return the affected run ids."""
    now = timezone.now()
    runs: set[int] = set()
    for phase in Phase.objects.select_related("run").filter(state=PhaseState.RUNNING, lease_expires_at__lt=now):
        with transaction.atomic():
            retry = phase.attempt < phase.max_attempts
            changed = Phase.objects.filter(pk=phase.pk, state=PhaseState.RUNNING, lease_token=phase.lease_token).update(
                state=PhaseState.PENDING if retry else PhaseState.FAILED, lease_token="", lease_expires_at=None,
                finished_at=None if retry else now, error="lease expired: the worker stopped answering",
            )
            if changed:
                event_append(run=phase.run, phase=phase, type=EventType.PHASE_LEASE_EXPIRED, level="warning",
                             message=f"{phase.name}: lease of {phase.worker} expired; "
                                     + ("requeued" if retry else "no attempts left"))
                runs.add(phase.run_id)
    for run_id in runs:
        run_settle(run_id=run_id)
    return sorted(runs)
