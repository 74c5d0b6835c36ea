"""How far behind its source a table is, in the units a person reads at a glance ("6 s", "4 min")."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone

register = template.Library()


def short_duration(seconds: float) -> str:
    """``seconds`` as "6 s", "4 min 10 s", "2 h 5 min" or "3 d 4 h"."""
    seconds = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            return f"{whole} {unit}" + (f" {rest // sub_size} {sub}" if rest // sub_size else "")
    return f"{seconds} s"


@register.filter
def behind(moment: dt.datetime | None) -> str:
    """How long ago ``moment`` was, short (empty for None)."""
    return "" if moment is None else short_duration((timezone.now() - moment).total_seconds())


@register.filter
def seconds_short(seconds: float | None) -> str:
    """A number of seconds, short (empty for None)."""
    return "" if seconds is None else short_duration(seconds)
