"""The append-only run event log, ordered per run by ``seq``."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlroom.services import ServiceError
from runs.models import Phase, PhaseState, Run, RunEvent


class StaleLease(ServiceError):
    """The caller's lease token is not the phase's live one: it may write nothing."""

    code = "stale_lease"


def event_append(
    *, run: Run, type: str, phase: Phase | None = None, message: str = "", level: str = "info",
    payload: dict[str, Any] | None = None, event_id: uuid.UUID | None = None,
) -> RunEvent:
    """Append one event with the run's next sequence number (atomic per run)."""
    with transaction.atomic():
        # The UPDATE takes the run's row lock, so concurrent appends get distinct numbers.
        Run.objects.filter(pk=run.pk).update(last_seq=F("last_seq") + 1)
        seq = Run.objects.filter(pk=run.pk).values_list("last_seq", flat=True).get()
        return RunEvent.objects.create(
            run_id=run.pk, phase=phase, seq=seq, type=type, level=level, message=message[:10_000],
            payload=payload or {}, ts=timezone.now(), event_id=event_id or uuid.uuid4(),
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


EXECUTOR_EVENT_TYPES = ("PHASE_LOG", "PHASE_PROGRESS")
LEVELS = ("debug", "info", "warning", "error")


def events_append_batch(*, run: Run, events: list[dict[str, Any]]) -> dict[str, int]:
    """Append an executor's batch in order. Each event names its phase and that phase's live
    lease token; an event_id seen before is skipped, so a retried batch adds nothing twice.
    The batch is all or nothing: one stale token or bad event and none is written."""
    if not isinstance(events, list) or not events or len(events) > 1000:
        raise ServiceError("Send 'events' as a list of 1 to 1000 events.")
    phases = {p.pk: p for p in run.phases.all()}
    appended = duplicates = 0
    with transaction.atomic():
        for index, raw in enumerate(events):
            if not isinstance(raw, dict):
                raise ServiceError(f"events[{index}] must be an object.")
            kind = raw.get("type")
            if kind not in EXECUTOR_EVENT_TYPES:
                raise ServiceError(f"events[{index}].type must be one of {', '.join(EXECUTOR_EVENT_TYPES)} "
                                   "(outcomes go through complete).")
            try:
                event_id = uuid.UUID(str(raw.get("event_id")))
            except ValueError:
                raise ServiceError(f"events[{index}].event_id must be a UUID.") from None
            phase = phases.get(raw.get("phase_id"))
            if phase is None:
                raise ServiceError(f"events[{index}].phase_id is not a phase of run {run.pk}.")
            if RunEvent.objects.filter(event_id=event_id).exists():
                duplicates += 1
                continue
            level = raw.get("level", "info")
            payload = raw.get("payload") or {}
            if level not in LEVELS or not isinstance(payload, dict):
                raise ServiceError(f"events[{index}]: level must be one of {', '.join(LEVELS)}, payload an object.")
            if not Phase.objects.filter(pk=phase.pk, lease_token=str(raw.get("lease_token") or "-"),
                                        state=PhaseState.RUNNING).exists():
                raise StaleLease(f"events[{index}]: the lease token of phase {phase.name} is not the live one.")
            event_append(run=run, phase=phase, type=kind, level=level, message=str(raw.get("message", "")),
                         payload=payload, event_id=event_id)
            appended += 1
    return {"appended": appended, "duplicates": duplicates}
