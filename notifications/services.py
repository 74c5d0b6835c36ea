"""Notifications: created once per (run, event, channel, target), then sent by a worker with retries.

Rows are written in the transaction that decides the event (run_settle for failure and recovery,
the periodic long-run check), so they commit with it; the unique constraint makes a second settle
or a racing check a no-op. A send claims its row with a conditional UPDATE, so two workers never
send one notification at the same time; a crash after the receiver took it and before ``sent`` is
written can repeat it (a webhook receiver drops the repeat by its X-Notification-Id).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.fields.json import KeyTransform
from django.urls import reverse
from django.utils import timezone

from notifications.channels import channel_for
from notifications.channels.base import Message, NotifyError
from notifications.models import Notification
from notifications.spec import notifications_of
from runs.models import JobVersion, Run, RunStatus

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
RETRY_BASE_S = 30.0  # attempts wait 30 s, 60 s, 120 s, 240 s after the one before
CLAIM_S = 120  # a sender holds its row this long; after a crash the sweep hands it on
SWEEP_GRACE_S = 60  # a due row this late has lost its message: the sweep enqueues it again
LONG_RUN_SCAN_LIMIT = 1000


def _enqueue(notification_ids: list[int]) -> None:
    from notifications.tasks import notification_send

    for pk in notification_ids:
        transaction.on_commit(lambda pk=pk: notification_send.delay(pk))


def _create(*, run: Run, kind: str, config: dict) -> list[int]:
    now = timezone.now()
    base = {"workspace_id": run.workspace_id, "run_id": run.pk, "job_id": run.job_id, "kind": kind,
            "next_attempt_at": now}
    rows = [Notification(channel=Notification.Channel.EMAIL, target=address, **base) for address in config["email"]]
    if config["webhook"]:
        rows.append(Notification(channel=Notification.Channel.WEBHOOK, target=config["webhook"]["url"],
                                 secret_ref=config["webhook"]["secret_ref"], **base))
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    ids = list(Notification.objects.filter(run_id=run.pk, kind=kind, state=Notification.State.PENDING,
                                           attempts=0).values_list("pk", flat=True))
    _enqueue(ids)
    return ids


def _previous_failed(run: Run) -> bool:
    # The job's latest run in this environment that ended (succeeded or failed) before this one;
    # a cancelled run says nothing about the job's health and is passed over. Walked by id on the
    # (job, -id) index: it stops at the first match instead of sorting the job's history.
    previous = (Run.objects.filter(job_id=run.job_id, environment_id=run.environment_id,
                                   status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED],
                                   finished_at__lte=run.finished_at)
                .exclude(pk=run.pk).order_by("-id").values_list("status", flat=True).first())
    return previous == RunStatus.FAILED


def notifications_for_settled_run(run: Run) -> list[int]:
    """Create the notifications a run that just ended owes (failure, or recovery: it succeeded and
    the job's previous finished run in its environment failed) and enqueue their sending after
    commit. Called by run_settle (runs.hooks.RUN_SETTLED) in its transaction; returns their ids."""
    # Only the spec's notifications section: a spec can be 256 KiB, and this runs at every settle.
    section = JobVersion.objects.filter(pk=run.job_version_id).values_list(
        KeyTransform("notifications", "spec"), flat=True).first()
    config = notifications_of({"notifications": section})
    if config is None:
        return []
    if run.status == RunStatus.FAILED and "failure" in config["events"]:
        return _create(run=run, kind=Notification.Kind.FAILURE, config=config)
    if run.status == RunStatus.SUCCEEDED and "recovery" in config["events"] and _previous_failed(run):
        return _create(run=run, kind=Notification.Kind.RECOVERY, config=config)
    return []


def notifications_for_long_runs(*, now: datetime | None = None) -> list[int]:
    """Beat: create long_run notifications for running runs older than their spec's
    duration_threshold_s that have none yet; returns the ids created."""
    now = now or timezone.now()
    candidates = (Run.objects.filter(status=RunStatus.RUNNING, started_at__isnull=False)
                  .exclude(Exists(Notification.objects.filter(run=OuterRef("pk"), kind=Notification.Kind.LONG_RUN)))
                  .annotate(notify=KeyTransform("notifications", "job_version__spec"))
                  .filter(notify__isnull=False).order_by("id")[:LONG_RUN_SCAN_LIMIT])
    created: list[int] = []
    for run in candidates:
        config = notifications_of({"notifications": run.notify})
        if config is None or "long_run" not in config["events"]:
            continue
        if now - run.started_at < timedelta(seconds=config["duration_threshold_s"]):
            continue
        with transaction.atomic():
            created += _create(run=run, kind=Notification.Kind.LONG_RUN, config=config)
    return created


def notifications_stalled(*, now: datetime | None = None) -> list[int]:
    """Pending notifications whose send message was lost (or whose sender died): due for a while
    and not held by a sender. The beat enqueues them again."""
    now = now or timezone.now()
    return list(Notification.objects.filter(state=Notification.State.PENDING,
                                            next_attempt_at__lte=now - timedelta(seconds=SWEEP_GRACE_S))
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .order_by("next_attempt_at").values_list("pk", flat=True)[:500])


def _message(notification: Notification, now: datetime) -> Message:
    run = notification.run
    where = f"{run.job.slug} in {run.environment.name}"
    path = reverse("runs:run_detail", args=[run.workspace.slug, run.pk])
    url = settings.NOTIFY_BASE_URL + path
    if notification.kind == Notification.Kind.FAILURE:
        subject = f"Run #{run.pk} of {where} failed"
        text = f"{subject}: {run.error[:500] or 'no phase error recorded'}"
    elif notification.kind == Notification.Kind.RECOVERY:
        subject = f"Run #{run.pk} of {where} succeeded after a failure"
        text = f"{subject}: the job's previous run in {run.environment.name} had failed."
    else:
        minutes = (now - run.started_at).total_seconds() / 60 if run.started_at else 0
        subject = f"Run #{run.pk} of {where} is running long"
        text = f"{subject}: running for {minutes:.0f} min (status now: {run.status})."
    facts = {"run": run.pk, "job": run.job.slug, "environment": run.environment.name, "status": run.status,
             "workspace": run.workspace.slug, "url": url}
    return Message(notification_id=notification.pk, kind=notification.kind, subject=f"[Control Room] {subject}",
                   text=f"{text}\n{url}", url=url, facts=facts)


def notification_send(*, notification_id: int) -> float | None:
    """Make one attempt at sending a pending notification that is due and not held by another
    worker. Returns the seconds to wait before the next attempt, or None when there is nothing
    more to do (sent, failed for good, or not this worker's to send)."""
    now = timezone.now()
    claimed = (Notification.objects.filter(pk=notification_id, state=Notification.State.PENDING,
                                           next_attempt_at__lte=now)
               .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
               .update(claimed_until=now + timedelta(seconds=CLAIM_S), attempts=F("attempts") + 1))
    if claimed != 1:
        return None
    notification = Notification.objects.select_related("run__job", "run__environment", "run__workspace").get(
        pk=notification_id)
    try:
        channel_for(notification.channel).send(
            target=notification.target, message=_message(notification, now),
            workspace_id=notification.workspace_id, secret_ref=notification.secret_ref)
    except NotifyError as exc:
        error = str(exc)
    except Exception:
        log.exception("notification %s: sending failed", notification_id)
        error = "Sending failed unexpectedly; the server log has the details."
    else:
        Notification.objects.filter(pk=notification_id).update(
            state=Notification.State.SENT, sent_at=timezone.now(), last_error="", claimed_until=None)
        return None
    error = error[:500]
    log.warning("notification %s (%s, attempt %s of %s) not sent: %s", notification_id, notification.channel,
                notification.attempts, MAX_ATTEMPTS, error)
    if notification.attempts >= MAX_ATTEMPTS:
        Notification.objects.filter(pk=notification_id).update(
            state=Notification.State.FAILED, last_error=error, claimed_until=None)
        return None
    delay = RETRY_BASE_S * 2 ** (notification.attempts - 1)
    Notification.objects.filter(pk=notification_id).update(
        last_error=error, claimed_until=None, next_attempt_at=timezone.now() + timedelta(seconds=delay))
    return delay
