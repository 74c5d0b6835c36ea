"""Celery task of git push webhooks: the sync a delivery asked for, off the request."""

from __future__ import annotations

from celery import shared_task

from runs.services.gitdeliveries import git_delivery_process as git_delivery_process_service


@shared_task(acks_late=True, ignore_result=True)
def git_delivery_process(delivery_pk: int) -> None:
    """Sync one queued delivery (a repeated message finds it processed and does nothing)."""
    git_delivery_process_service(delivery_pk=delivery_pk)
