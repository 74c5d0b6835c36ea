"""Reads of notifications; the run page reaches them through a run it has already checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from notifications.channels import channel_for
from notifications.models import Notification
from runs.models import Run

RUN_PAGE_LIMIT = 50


@dataclass(frozen=True)
class NotificationRow:
    kind: str
    channel: str
    target: str  # as shown: a webhook URL without credentials or query string
    state: str
    attempts: int
    last_error: str
    sent_at: datetime | None


def notifications_of_run(*, run: Run) -> list[NotificationRow]:
    """The run's notifications (at most RUN_PAGE_LIMIT), oldest first, fit for its page."""
    rows = Notification.objects.filter(workspace_id=run.workspace_id, run_id=run.pk).order_by("id")[:RUN_PAGE_LIMIT]
    return [NotificationRow(kind=n.get_kind_display(), channel=n.get_channel_display(),
                            target=channel_for(n.channel).target_display(n.target), state=n.state,
                            attempts=n.attempts, last_error=n.last_error, sent_at=n.sent_at) for n in rows]
