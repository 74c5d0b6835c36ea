"""Push webhook deliveries: recorded while the request lasts, synced later on a worker.

The request only verifies the signature and writes a ``GitDelivery``; a clone can take minutes
and a sender retries a webhook that does not answer within seconds, so the sync (and, with
``run_on_push``, the runs) happens in a Celery task. The delivery id is unique per source: a
replayed delivery finds its row and changes nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlroom.access import system_access
from controlroom.audit import audit_record
from controlroom.services import ServiceError
from runs.models import GitDelivery, GitSource
from runs.services.gitsync import PushResult, git_push_receive

log = logging.getLogger(__name__)


class DeliveryStatus:
    QUEUED = "queued"
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"
    IGNORED = "ignored"


def push_result_json(push: PushResult, pushed_sha: str) -> dict[str, Any]:
    """What a push sync did, as stored on its delivery."""
    sync = push.sync
    return {
        "sha": sync.sha, "pushed_sha": pushed_sha, "stale": sync.stale,
        "jobs": [{"job": j.slug, "path": j.path, "version": j.version, "outcome": j.outcome} for j in sync.jobs],
        "errors": [{"file": e.path, "errors": e.errors} for e in sync.errors],
        "runs": push.run_ids, "run_errors": push.run_errors,
    }


def git_delivery_receive(*, source: GitSource, delivery_id: str, sha: str = "", ignored: str = "",
                         body_sha256: str = "") -> tuple[GitDelivery, bool]:
    """Record a verified delivery. Returns (delivery, False) for a delivery already received, by
    its id or by its signed body (a replay: nothing else happens). A new delivery is ``ignored``
    when given a reason, else ``queued``, and its sync is enqueued once this transaction commits."""
    status = DeliveryStatus.IGNORED if ignored else DeliveryStatus.QUEUED
    access = system_access(source.workspace)
    same = Q(delivery_id=delivery_id) | (Q(body_sha256=body_sha256) if body_sha256 else Q(pk__in=[]))
    try:
        with transaction.atomic():
            existing = GitDelivery.objects.filter(same, source=source).first()
            if existing is not None:
                return existing, False
            delivery = GitDelivery.objects.create(source=source, delivery_id=delivery_id, sha=sha, status=status,
                                                  body_sha256=body_sha256,
                                                  result={"ignored": ignored} if ignored else {})
            audit_record(access=access, action="git.delivery", target=delivery,
                         after={"delivery": delivery_id, "sha": sha, "status": status, "ignored": ignored})
            if status == DeliveryStatus.QUEUED:
                from runs.git_tasks import git_delivery_process as task

                transaction.on_commit(lambda: task.delay(delivery.pk))
    except IntegrityError:  # a concurrent request recorded the same delivery first (the unique constraints)
        existing = GitDelivery.objects.filter(same, source=source).first()
        if existing is None:
            raise
        return existing, False
    return delivery, True


def git_delivery_process(*, delivery_pk: int) -> GitDelivery | None:
    """The worker's part: sync at the delivery's commit, run changed jobs when the source says
    so, and store the outcome on the delivery (synced, ignored when the commit is older than the
    one synced, failed). A delivery no longer queued (a repeated message) is left alone."""
    # Claimed first (a conditional UPDATE): of two workers handed the same delivery, one syncs.
    if not GitDelivery.objects.filter(pk=delivery_pk, status=DeliveryStatus.QUEUED).update(
            status=DeliveryStatus.SYNCING, claimed_at=timezone.now()):
        return None
    delivery = GitDelivery.objects.select_related("source__workspace").get(pk=delivery_pk)
    source = delivery.source
    try:
        push = git_push_receive(access=system_access(source.workspace), source=source, sha=delivery.sha or None)
    except (ServiceError, PermissionDenied) as exc:
        status, result = DeliveryStatus.FAILED, {"error": str(exc)}
    except Exception:
        log.exception("git push sync failed", extra={"delivery": delivery.delivery_id, "source": source.pk})
        status, result = DeliveryStatus.FAILED, {"error": "The sync failed on the server; the worker log has "
                                                          "the details."}
    else:
        status = DeliveryStatus.IGNORED if push.sync.stale else DeliveryStatus.SYNCED
        result = push_result_json(push, delivery.sha)
    GitDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SYNCING).update(status=status, result=result)
    delivery.refresh_from_db()
    return delivery


def git_deliveries_stalled(*, queued_s: int = 60, syncing_s: int = 1800) -> list[int]:
    """Deliveries whose wake-up was lost (queued, not woken for ``queued_s``) or whose worker
    died mid-sync (syncing for ``syncing_s``, beyond any git timeout): back in the queue, marked
    as woken now; returns their ids so the caller wakes a worker for each (a duplicate wake-up
    finds the delivery claimed and does nothing). For a queued delivery ``claimed_at`` holds
    when it was last woken."""
    now = timezone.now()
    GitDelivery.objects.filter(status=DeliveryStatus.SYNCING, claimed_at__lt=now - timedelta(seconds=syncing_s)) \
        .update(status=DeliveryStatus.QUEUED, claimed_at=None)
    cutoff = now - timedelta(seconds=queued_s)
    ids = list(GitDelivery.objects.filter(status=DeliveryStatus.QUEUED, received_at__lt=cutoff)
               .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=cutoff))
               .order_by("id").values_list("pk", flat=True)[:100])
    GitDelivery.objects.filter(pk__in=ids, status=DeliveryStatus.QUEUED).update(claimed_at=now)
    return ids
