"""Celery task of the SQL editor, on the ``sql`` queue: a wake-up that runs one execution."""

from __future__ import annotations

from celery import shared_task

from sqlwarehouse.execution import executions_reap
from sqlwarehouse.execution import query_execute as query_execute_service


@shared_task(acks_late=True, ignore_result=True)
def query_execute(execution_id: int) -> None:
    query_execute_service(execution_id=execution_id)


@shared_task(ignore_result=True)
def reap_lost_executions() -> None:
    """Beat: fail SQL executions whose worker stopped (see executions_reap)."""
    executions_reap()
