"""The append-only run event log, ordered per run by ``seq``."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs.models import Phase, PhaseState, Run, RunEvent


class StaleLease(Exception):
    """The caller's lease token is not the phase's live one: it may write nothing."""


def event_append(
    *, run: Run, type: str, phase: Phase | None = None, message: str = "", level: str = "info",
    payload: dict[str, Any] | None = None,
) -> RunEvent:
    """Append one event with the run's next sequence number (atomic per run)."""
    with transaction.atomic():
        # The UPDATE takes the run's row lock, so concurrent appends get distinct numbers.
        Run.objects.filter(pk=run.pk).update(last_seq=F("last_seq") + 1)
        seq = Run.objects.filter(pk=run.pk).values_list("last_seq", flat=True).get()
        return RunEvent.objects.create(
            run_id=run.pk, phase=phase, seq=seq, type=type, level=level, message=message[:10_000],
            payload=payload or {}, ts=timezone.now(),
        )


def phase_log(
    *, phase: Phase, lease_token: str, message: str, level: str = "info", payload: dict[str, Any] | None = None
) -> RunEvent:
    """A PHASE_LOG line from the executor holding the lease; a stale token writes nothing."""
    with transaction.atomic():
        live = Phase.objects.filter(pk=phase.pk, lease_token=lease_token, state=PhaseState.RUNNING).exists()
        if not live:
            raise StaleLease(f"phase {phase.pk}: lease token is no longer valid")
        return event_append(run=phase.run, phase=phase, type="PHASE_LOG", message=message, level=level,
                            payload=payload)
