"""Delivering OpenLineage documents: a worker reads the run event log past the cursor and sends
each lifecycle event's documents to OPENLINEAGE_URL (HTTP POST, JSON) and/or appends them to
OPENLINEAGE_FILE (one JSON document per line).

- In order, at least once: the cursor moves past an event only when its documents were
  delivered. An endpoint that is down stops the pump (logged, counted); the next tick (every
  OPENLINEAGE_PUMP_S, and after each run settles) tries again from the same event. A run never
  waits for, or fails because of, lineage.
- An event the endpoint refuses as malformed (a 4xx other than 408/429) is dropped, logged and
  counted, so one bad document cannot stop lineage for good.
- Events younger than OPENLINEAGE_LAG_S are left for the next tick: ids are taken at insert and
  a transaction that commits later than a younger one would otherwise be skipped.
- One pump at a time: the cursor row is locked while it runs (others return at once).
"""

from __future__ import annotations

import fcntl
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from controlroom.metrics import count
from lineage.events import LIFECYCLE, documents_for
from lineage.models import LineageCursor
from runs.models import RunEvent

log = logging.getLogger(__name__)
BATCH = 200
TIMEOUT_S = 10.0


class Undelivered(Exception):
    """The endpoint could not take a document now (down, 5xx, 408, 429): try again later."""


def enabled() -> bool:
    return bool(settings.OPENLINEAGE_URL or settings.OPENLINEAGE_FILE)


def _post(document: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/json"}
    if settings.OPENLINEAGE_API_KEY:
        headers["Authorization"] = f"Bearer {settings.OPENLINEAGE_API_KEY}"
    try:
        response = requests.post(settings.OPENLINEAGE_URL, data=json.dumps(document), headers=headers,
                                 timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise Undelivered(f"{type(exc).__name__}: {exc}") from None
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise Undelivered(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:300]}")


def _append(documents: list[dict[str, Any]]) -> None:
    path = Path(settings.OPENLINEAGE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in documents)
    with path.open("a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # whole lines, even with another writer
        handle.write(lines)
        handle.flush()


def deliver(documents: list[dict[str, Any]]) -> None:
    """Send the documents by every configured transport (Undelivered: try again later)."""
    if settings.OPENLINEAGE_URL:
        for document in documents:
            _post(document)
    if settings.OPENLINEAGE_FILE:
        try:
            _append(documents)
        except OSError as exc:
            raise Undelivered(f"{settings.OPENLINEAGE_FILE}: {exc.strerror}") from None


def pump(*, batch: int = BATCH) -> int:
    """Deliver the documents of lifecycle events past the cursor; the number of events handled."""
    if not enabled():
        return 0
    handled = 0
    with transaction.atomic():
        cursor = LineageCursor.objects.first() or LineageCursor.objects.create()
        try:
            with transaction.atomic():
                cursor = LineageCursor.objects.select_for_update(nowait=True).get(pk=cursor.pk)
        except DatabaseError:
            return 0  # another pump is at work
        horizon = timezone.now() - timedelta(seconds=settings.OPENLINEAGE_LAG_S)
        events = (RunEvent.objects.filter(pk__gt=cursor.last_event_id, type__in=LIFECYCLE, ts__lte=horizon)
                  .select_related("run__workspace", "run__environment", "run__job", "run__job_version", "phase")
                  .order_by("pk")[:batch])
        for event in events:
            try:
                deliver(documents_for(event))
                cursor.sent += 1
            except Undelivered as exc:
                cursor.last_error = f"event {event.pk}: {exc}"[:500]
                log.warning("OpenLineage delivery stopped at run event %s: %s", event.pk, exc)
                count("controlroom_openlineage_failures", outcome="retry")
                break
            except ValueError as exc:
                cursor.dropped += 1
                cursor.last_error = f"event {event.pk} dropped: {exc}"[:500]
                log.error("OpenLineage endpoint refused the documents of run event %s: %s", event.pk, exc)
                count("controlroom_openlineage_failures", outcome="dropped")
            cursor.last_event_id = event.pk
            handled += 1
        cursor.save()
    return handled


def kick_after_settle(run: Any) -> None:
    """RUN_SETTLED hook: a pump soon after the run's final event commits (beside the periodic one)."""
    if enabled():
        from lineage.tasks import openlineage_pump

        transaction.on_commit(lambda: openlineage_pump.apply_async(countdown=settings.OPENLINEAGE_LAG_S + 1))
