"""``{% run_notifications run as rows %}``: the run page lists notifications without its view
knowing about them (templates/runs/_notifications.html)."""

from __future__ import annotations

from django import template

from notifications.selectors import NotificationRow, notifications_of_run
from runs.models import Run

register = template.Library()


@register.simple_tag
def run_notifications(run: Run) -> list[NotificationRow]:
    """The run's notifications as the run page shows them."""
    return notifications_of_run(run=run)
