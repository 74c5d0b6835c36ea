"""The append-only run event log, ordered per run by ``seq``."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from controlroom.masking import mask_text, mask_value
from controlroom.services import ServiceError
from runs.models import Phase, Run, RunEvent
from runs.services.fence import StaleLease, lease_fence, phases_locked_live

__all__ = ["StaleLease", "event_append", "events_append_batch", "phase_log"]


def event_append(
    *, run: Run, type: str, phase: Phase | None = None, message: str = "", level: str = "info",
    payload: dict[str, Any] | None = None, event_id: uuid.UUID | None = None,
) -> RunEvent:
    """Append one event with the run's next sequence number (atomic per run); secrets in its
    message and payload are stored masked (controlroom.masking)."""
    message, payload = mask_text(run.workspace_id, message), mask_value(run.workspace_id, payload or {})
    with transaction.atomic(savepoint=False):  # two statements; no savepoint round trips
        seq = _reserve(run.pk, 1)
        return RunEvent.objects.create(
            run_id=run.pk, phase=phase, seq=seq, type=type, level=level, message=message[:10_000],
            payload=payload or {}, ts=timezone.now(), event_id=event_id or uuid.uuid4(),
        )


def _reserve(run_id: int, count: int) -> int:
    """Reserve ``count`` sequence numbers of a run; returns the last. The UPDATE takes the run's
    row lock until commit, so concurrent appends get distinct, gap-free numbers."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Run._meta.db_table} SET last_seq = last_seq + %s WHERE id = %s RETURNING last_seq",
                       [count, run_id])
        return cursor.fetchone()[0]


def phase_log(
    *, phase: Phase, lease_token: str, message: str, level: str = "info", payload: dict[str, Any] | None = None,
    type: str = "PHASE_LOG",
) -> RunEvent:
    """A PHASE_LOG line (or PHASE_PROGRESS) from the executor holding the lease; a stale token
    writes nothing."""
    assert type in EXECUTOR_EVENT_TYPES
    # Masked before the fence locks the phase: reading the workspace's secrets (at most every
    # MASK_REFRESH_S, perhaps from Vault) never holds the lock; event_append's own pass is then cheap.
    workspace_id = phase.run.workspace_id  # cached on the phase after its first line
    message, payload = mask_text(workspace_id, message), mask_value(workspace_id, payload or {})
    with lease_fence(phase_id=phase.pk, lease_token=lease_token) as live:
        return event_append(run=live.run, phase=live, type=type, message=message, level=level, payload=payload)


EXECUTOR_EVENT_TYPES = ("PHASE_LOG", "PHASE_PROGRESS")
LEVELS = ("debug", "info", "warning", "error")


def events_append_batch(*, run: Run, events: list[dict[str, Any]]) -> dict[str, int]:
    """Append an executor's batch in order. Each event names its phase and that phase's live
    lease token; an event_id seen before is skipped, so a retried batch adds nothing twice.
    The batch is all or nothing: one stale token or bad event and none is written."""
    if not isinstance(events, list) or not events or len(events) > 1000:
        raise ServiceError("Send 'events' as a list of 1 to 1000 events.")
    phases = {p.pk: p for p in run.phases.all()}
    parsed: list[tuple[uuid.UUID, Phase, dict[str, Any]]] = []
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            raise ServiceError(f"events[{index}] must be an object.")
        if raw.get("type") not in EXECUTOR_EVENT_TYPES:
            raise ServiceError(f"events[{index}].type must be one of {', '.join(EXECUTOR_EVENT_TYPES)} "
                               "(outcomes go through complete).")
        try:
            event_id = uuid.UUID(str(raw.get("event_id")))
        except ValueError:
            raise ServiceError(f"events[{index}].event_id must be a UUID.") from None
        phase_id = raw.get("phase_id")
        phase = phases.get(phase_id) if isinstance(phase_id, int) and not isinstance(phase_id, bool) else None
        if phase is None:
            raise ServiceError(f"events[{index}].phase_id is not a phase of run {run.pk}.")
        if raw.get("level", "info") not in LEVELS or not isinstance(raw.get("payload") or {}, dict):
            raise ServiceError(f"events[{index}]: level must be one of {', '.join(LEVELS)}, payload an object.")
        # Masked before the transaction: reading the workspace's secrets never holds the run's lock.
        parsed.append((event_id, phase, {**raw, "message": mask_text(run.workspace_id, str(raw.get("message", ""))),
                                          "payload": mask_value(run.workspace_id, raw.get("payload") or {})}))
    with transaction.atomic():
        # One locked lease check per (phase, token) pair, not per event: the batch is all or nothing.
        phases_locked_live((phase.pk, str(raw.get("lease_token") or "")) for _, phase, raw in parsed)
        seen = set(RunEvent.objects.filter(event_id__in=[e for e, _, _ in parsed]).values_list("event_id", flat=True))
        fresh, ids = [], set()
        for event_id, phase, raw in parsed:
            if event_id not in seen and event_id not in ids:
                ids.add(event_id)
                fresh.append((event_id, phase, raw))
        duplicates, appended = len(parsed) - len(fresh), len(fresh)
        if fresh:
            first = _reserve(run.pk, len(fresh)) - len(fresh) + 1
            now = timezone.now()
            RunEvent.objects.bulk_create(
                RunEvent(run_id=run.pk, phase=phase, seq=first + i, event_id=event_id, type=raw["type"],
                         level=raw.get("level", "info"), message=raw["message"][:10_000],
                         payload=raw["payload"], ts=now)
                for i, (event_id, phase, raw) in enumerate(fresh)
            )
    return {"appended": appended, "duplicates": duplicates}
