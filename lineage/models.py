"""How far the OpenLineage delivery has read the run event log."""

from __future__ import annotations

from django.db import models


class LineageCursor(models.Model):
    """One row: the id of the last run event turned into OpenLineage and delivered (or dropped).
    Every lifecycle change is a run event written by the change's own transaction, whatever path
    wrote it (the worker, the executor API, the reaper, PostgreSQL's one-statement paths), so the
    log is the outbox: nothing is emitted that did not commit, and nothing committed is missed."""

    last_event_id = models.BigIntegerField(default=0)
    sent = models.BigIntegerField(default=0)
    dropped = models.BigIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"OpenLineage cursor at event {self.last_event_id}"
