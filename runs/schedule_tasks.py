"""Celery tasks of job schedules: django-celery-beat fires these on the schedule's cron."""

from __future__ import annotations

from celery import shared_task

from runs.services.schedules import schedule_tick as schedule_tick_service


@shared_task(ignore_result=True)
def schedule_tick(schedule_id: int) -> None:
    """Create the runs due for one schedule (the service makes repeats harmless)."""
    schedule_tick_service(schedule_id=schedule_id)
