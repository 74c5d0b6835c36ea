"""Each Celery worker writes a sign of life (a ``WorkerBeat`` row) every WORKER_BEAT_S, from a
thread of its main process, and removes it when it shuts down cleanly; ``/metrics`` reports a
worker whose row is older than a minute as down (controlroom/metrics.py). A row of a worker
that died stays, reporting it down, until a worker of the same name starts again."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)
_stop = threading.Event()


def beat_once(hostname: str, queues: str) -> None:
    """Write the worker's sign of life now."""
    from django.db import close_old_connections
    from django.utils import timezone

    from controlroom.models import WorkerBeat

    close_old_connections()
    now = timezone.now()
    updated = WorkerBeat.objects.filter(hostname=hostname).update(seen_at=now, queues=queues)
    if not updated:
        WorkerBeat.objects.update_or_create(hostname=hostname, defaults={
            "queues": queues, "seen_at": now, "started_at": now})


def _beat(hostname: str, queues: str, every_s: float) -> None:
    while not _stop.is_set():
        try:
            beat_once(hostname, queues)
        except Exception:  # the database may be away for a while; the next beat tries again
            log.warning("the worker's sign of life could not be written", exc_info=True)
        _stop.wait(every_s)


@worker_ready.connect
def _started(sender: Any = None, **kwargs: Any) -> None:
    from django.conf import settings
    from django.utils import timezone

    from controlroom.models import WorkerBeat

    hostname = getattr(sender, "hostname", "") or "celery"
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from)) if sender is not None else ""
    try:
        WorkerBeat.objects.filter(hostname=hostname).update(started_at=timezone.now())
    except Exception:
        log.warning("the worker's start could not be recorded", exc_info=True)
    _stop.clear()
    threading.Thread(target=_beat, args=(hostname, queues, settings.WORKER_BEAT_S), name="worker-beat",
                     daemon=True).start()


@worker_shutdown.connect
def _stopped(sender: Any = None, **kwargs: Any) -> None:
    from controlroom.models import WorkerBeat

    _stop.set()
    hostname = getattr(sender, "hostname", "")
    log.info("worker shutdown: removing the sign of life of %r", hostname)
    if hostname:
        try:
            WorkerBeat.objects.filter(hostname=hostname).delete()
        except Exception:
            log.warning("the worker's sign of life could not be removed", exc_info=True)
