"""Seams other apps subscribe to (from their AppConfig.ready), so the run engine never imports them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

# Called with the run inside run_settle's transaction, once, when the run has just reached its
# final state (succeeded, failed or cancelled). A hook writes rows that commit with that state and
# enqueues work with transaction.on_commit; what it raises is logged and undone, never the settle.
RUN_SETTLED: list[Callable[[Any], None]] = []


def run_settled(run: Any) -> None:
    """Call every RUN_SETTLED hook with ``run``, each in a savepoint of its own."""
    for hook in RUN_SETTLED:
        try:
            with transaction.atomic():
                hook(run)
        except Exception:
            log.exception("run-settled hook %s of run %s", getattr(hook, "__qualname__", hook), run.pk)
