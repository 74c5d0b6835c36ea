"""Ingestion without a server: the short durations the table pages use for freshness ("6 s behind",
"2 min 5 s"), and watermark positions that keep their types through the snapshot summary."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

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


@pytest.mark.parametrize("position", [
    (dt.datetime(2026, 12, 7, 9, 30, 1, 250000), 42),
    (dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC), "SO0042"),
    (dt.datetime(2026, 12, 7), Decimal("12345678901234567890.5"), dt.date(2026, 1, 31), None, True),
])
def test_an_ingest_watermark_position_round_trips_with_its_types(position):
    from lakehouse.ingest.bronze import decode_position, encode_position

    back = decode_position(encode_position(position))
    assert back == position and [type(v) for v in back] == [type(v) for v in position]
