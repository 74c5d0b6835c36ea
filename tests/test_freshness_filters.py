"""The short durations the table pages use for freshness ("6 s behind", "2 min 5 s")."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from lakehouse.templatetags.freshness import behind, seconds_short, short_duration


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (6.7, "6 s"), (60, "1 min"), (125, "2 min 5 s"),
                                               (3725, "1 h 2 min"), (90000, "1 d 1 h"), (-5, "0 s")])
def test_short_duration(seconds, text):
    assert short_duration(seconds) == text


def test_filters_read_a_moment_and_a_number_and_leave_none_empty():
    assert behind(timezone.now() - dt.timedelta(seconds=130)) in ("2 min 10 s", "2 min 11 s")
    assert behind(None) == "" and seconds_short(None) == "" and seconds_short(42.0) == "42 s"
