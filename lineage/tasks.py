"""The OpenLineage pump as a Celery task, run every OPENLINEAGE_PUMP_S by beat and after runs settle."""

from __future__ import annotations

from celery import shared_task

from lineage.delivery import pump


@shared_task(name="lineage.tasks.openlineage_pump", ignore_result=True)
def openlineage_pump() -> int:
    """Deliver what is due; several batches while there is more (a backlog after an outage)."""
    total = 0
    for _ in range(50):
        handled = pump()
        total += handled
        if handled == 0:
            break
    return total
