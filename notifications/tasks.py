"""Celery tasks of notifications: thin wrappers that load ids and call the services."""

from __future__ import annotations

from celery import shared_task

from notifications.services import notification_send as notification_send_service
from notifications.services import notifications_for_long_runs, notifications_stalled


@shared_task(acks_late=True, ignore_result=True)
def notification_send(notification_id: int) -> None:
    """One attempt; a failed one schedules the next (exponential backoff, bounded attempts)."""
    delay = notification_send_service(notification_id=notification_id)
    if delay is not None:
        notification_send.apply_async((notification_id,), countdown=delay)


@shared_task(ignore_result=True)
def notifications_sweep() -> None:
    """Beat, every minute: report runs past their duration threshold (the creating transaction
    enqueues them), and enqueue again what a lost message or a dead worker left pending."""
    notifications_for_long_runs()
    for pk in notifications_stalled():
        notification_send.delay(pk)
