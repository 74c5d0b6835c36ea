"""What every notification channel provides (one module per channel, like the phase executors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class NotifyError(Exception):
    """A send that did not reach its target. ``str()`` is one sentence for the run page; the
    detail goes to the log."""


@dataclass(frozen=True)
class Message:
    """What a notification says, whatever the channel."""

    notification_id: int
    kind: str  # failure, recovery or long_run
    subject: str
    text: str
    url: str  # the run page
    facts: dict[str, Any]  # run, job, environment, status…: for receivers that parse


class Notifier(Protocol):
    def send(self, *, target: str, message: Message, workspace_id: int, secret_ref: str) -> None:
        """Deliver ``message`` to ``target`` or raise NotifyError. ``secret_ref`` names a secret
        reference of workspace ``workspace_id`` (channels that sign use it; never another's)."""

    def target_display(self, target: str) -> str:
        """``target`` as the run page may show it (no credentials or query string)."""
