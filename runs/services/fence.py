"""The fence every write of a phase passes: its lease must be live inside the write's transaction.

A lease is live while the phase is running, the token is the one its claim issued, and
``lease_expires_at`` has not passed: an expired lease is dead at once, whether or not the reaper
has run yet. The check locks the phase row (FOR NO KEY UPDATE on PostgreSQL; SQLite serialises
writers) until the write commits, so a reaper or a new claim cannot slip between the check and
the write. Events, logs, artifacts, outputs and outcomes all go through here, in-process and over
HTTP alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from controlroom.services import ServiceError
from runs.models import Phase, PhaseState


class StaleLease(ServiceError):
    """The caller's lease token is not the phase's live one: it may write nothing."""

    code = "stale_lease"


def _stale(phase_id: int) -> StaleLease:
    return StaleLease(f"phase {phase_id}: the lease token is no longer valid (expired, taken over or ended)")


def lease_is_live(*, phase_id: int, lease_token: str) -> bool:
    """A cheap look without a lock (for refusing early, e.g. before reading an upload's body)."""
    return Phase.objects.filter(pk=phase_id, lease_token=lease_token, state=PhaseState.RUNNING,
                                lease_expires_at__gt=timezone.now()).exists()


def phases_locked_live(leases: Iterable[tuple[int, str]]) -> dict[int, Phase]:
    """Lock each phase named by a (phase id, lease token) pair whose token is its live lease (in id
    order, so two writers cannot deadlock); StaleLease names the first pair that is not live. Call
    inside a transaction; the locks last until it ends."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("phases_locked_live must run inside transaction.atomic()")
    now, found = timezone.now(), {}
    for phase_id, token in sorted(set(leases)):
        phase = (Phase.objects.select_for_update(of=("self",), no_key=True).select_related("run__workspace")
                 .filter(pk=phase_id, lease_token=token or "-", state=PhaseState.RUNNING,
                         lease_expires_at__gt=now).first())
        if phase is None:
            raise _stale(phase_id)
        found[phase_id] = phase
    return found


@contextmanager
def lease_fence(*, phase_id: int, lease_token: str) -> Iterator[Phase]:
    """A transaction in which ``lease_token`` is the live lease of running phase ``phase_id``:
    yields the locked phase; raises StaleLease (and writes nothing) otherwise."""
    with transaction.atomic():
        yield phases_locked_live([(phase_id, lease_token)])[phase_id]
