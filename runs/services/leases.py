"""Claims, leases and heartbeats: the fencing half of the run contract.

A claim is a conditional UPDATE ... WHERE state='pending' (and, for "give me any work",
candidates are picked with SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), so exactly one
caller wins a phase. Each claim raises ``attempt`` and issues a fresh lease token; every
later write must present it, so a worker whose lease was taken over can write nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from controlroom.models import Workspace
from runs.models import EventType, Phase, PhaseState, Run, RunStatus
from runs.services.events import StaleLease, event_append
from runs.services.fence import lease_is_live


def lease_ttl() -> timedelta:
    return timedelta(seconds=settings.PHASE_LEASE_TTL_S)


def _due(now) -> Q:
    return Q(not_before__isnull=True) | Q(not_before__lte=now)


def _claimable(now) -> Q:
    return Q(state=PhaseState.PENDING, blocked=False, run__status=RunStatus.RUNNING,
             run__cancel_requested=False) & _due(now)


def _take(phase_id: int, worker: str, now) -> tuple[Phase, str] | None:
    # The UPDATE's conditions must all be on the phase row itself: PostgreSQL re-checks them
    # after waiting for a competing claim (READ COMMITTED), whereas a join would turn the filter
    # into "id IN (subquery)", which is not re-checked, and every waiter would win.
    if not Run.objects.filter(phases__pk=phase_id, status=RunStatus.RUNNING, cancel_requested=False).exists():
        return None
    token = uuid.uuid4().hex
    claimed = Phase.objects.filter(_due(now), pk=phase_id, state=PhaseState.PENDING, blocked=False).update(
        state=PhaseState.RUNNING, attempt=F("attempt") + 1, lease_token=token, worker=worker[:200],
        lease_expires_at=now + lease_ttl(), heartbeat_at=now, started_at=now, finished_at=None, error="",
    )
    if claimed != 1:
        return None
    phase = Phase.objects.select_related("run").get(pk=phase_id)
    event_append(run=phase.run, phase=phase, type=EventType.PHASE_CLAIMED,
                 message=f"{phase.name} claimed by {worker} (attempt {phase.attempt}/{phase.max_attempts})",
                 payload={"attempt": phase.attempt, "worker": worker,
                          "lease_expires_at": phase.lease_expires_at.isoformat()})
    return phase, token


def phase_claim(*, phase_id: int, worker: str) -> tuple[Phase, str] | None:
    """Take this phase if it is claimable now; returns (phase, lease token) or None."""
    with transaction.atomic():
        return _take(phase_id, worker, timezone.now())


def phase_claim_next(
    *, workspace: Workspace, worker: str, kinds: Iterable[str], run_id: int | None = None
) -> tuple[Phase, str] | None:
    """Take the oldest claimable phase of these kinds (optionally of one run), or None."""
    from runs.services.admission import runs_admit

    now = timezone.now()
    if connection.vendor == "postgresql":  # one statement, no lock held across round trips
        from runs.services import pgclaim

        for attempt in range(2):
            got, queued = pgclaim.claim_next(workspace_id=workspace.pk, worker=worker, kinds=list(kinds),
                                             run_id=run_id, now=now, ttl=lease_ttl())
            if got is not None or not queued or attempt:
                return got
            # Runs wait for admission (the safety net behind run create and settle): admit them and
            # look once more, even if a concurrent claimer admitted them first.
            runs_admit(workspace_id=workspace.pk)
        return None
    runs_admit(workspace_id=workspace.pk)
    candidates = Phase.objects.filter(_claimable(now), kind__in=list(kinds), run__workspace=workspace)
    if run_id is not None:
        candidates = candidates.filter(run_id=run_id)
    with transaction.atomic():  # SQLite serialises writers; the conditional UPDATE in _take is the guard
        ids = list(candidates.order_by("id").values_list("id", flat=True)[:1])
        return _take(ids[0], worker, now) if ids else None


def phase_heartbeat(*, phase_id: int, lease_token: str) -> bool:
    """Extend the lease; returns whether the run asked to cancel. StaleLease if not ours."""
    now = timezone.now()
    with transaction.atomic():
        # An expired lease is dead even before the reaper has seen it: a heartbeat cannot revive it.
        extended = Phase.objects.filter(pk=phase_id, lease_token=lease_token, state=PhaseState.RUNNING,
                                        lease_expires_at__gt=now).update(
            lease_expires_at=now + lease_ttl(), heartbeat_at=now
        )
        if extended != 1:
            raise StaleLease(f"phase {phase_id}: the lease token is no longer valid (expired, taken over or ended)")
        return Run.objects.filter(phases__pk=phase_id).values_list("cancel_requested", flat=True).get()


def phase_require_live(*, phase_id: int, lease_token: str) -> None:
    """Refuse early (StaleLease) when ``lease_token`` is not the phase's live lease: a look without
    a lock, for before expensive work such as reading an upload; the write itself is fenced again."""
    if not lease_is_live(phase_id=phase_id, lease_token=lease_token):
        raise StaleLease(f"phase {phase_id}: the lease token is no longer valid (expired, taken over or ended)")
