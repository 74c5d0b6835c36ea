"""Reads of one run's log: filtered by phase and attempt, searched, read in keyset windows by
``seq`` and streamed whole. Never more than a window in memory, whatever the log's length."""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db.models import Q, QuerySet
from django.http import QueryDict

from controlroom.ids import id_parse
from runs.models import EventType, Phase, Run, RunEvent

LOG_WINDOW = 500  # lines the run page opens on, and each "load earlier" adds
SEARCH_MAX_CHARS = 200
ATTEMPT_MAX = 10_000
STREAM_CHUNK = 2_000
SEARCH_SCAN = 200_000  # lines one search request reads at most
_COLUMNS = ("seq", "ts", "level", "type", "phase_id", "message")


@dataclass(frozen=True)
class LogFilter:
    """What the log shows: one phase (or all), one attempt (or all), lines containing ``search``."""

    phase: Phase | None = None
    attempt: int | None = None
    search: str = ""

    @property
    def active(self) -> bool:
        return bool(self.phase or self.attempt or self.search)

    def query_string(self, **extra: int) -> str:
        """The filter as a query string (a shareable link), plus ``extra`` (a cursor)."""
        pairs = {"phase": self.phase.name if self.phase else "", "attempt": self.attempt or "", "q": self.search}
        return urlencode({k: v for k, v in {**pairs, **extra}.items() if v})


def log_filter_parse(*, phases: list[Phase], query: QueryDict) -> tuple[LogFilter, str]:
    """The log filter of a query string. A value that names nothing (a phase not in this run, an
    attempt that is not a whole number from 1) is dropped, with one sentence saying so."""
    errors = []
    phase_name = query.get("phase", "")
    phase = next((p for p in phases if p.name == phase_name), None)
    if phase_name and phase is None:
        errors.append(f"This run has no phase named '{phase_name[:64]}'; showing all phases.")
    raw_attempt = query.get("attempt", "")
    attempt = id_parse(raw_attempt)
    if raw_attempt and (attempt is None or attempt > ATTEMPT_MAX):
        attempt = None
        errors.append(f"The attempt must be a whole number from 1 to {ATTEMPT_MAX:,}; showing all attempts.")
    search = query.get("q", "").strip()
    if len(search) > SEARCH_MAX_CHARS:
        errors.append(f"Searches are at most {SEARCH_MAX_CHARS} characters; the rest was ignored.")
        search = search[:SEARCH_MAX_CHARS]
    return LogFilter(phase=phase, attempt=attempt, search=search), " ".join(errors)


@dataclass(frozen=True)
class Attempts:
    """Where each attempt of each phase begins: its PHASE_CLAIMED event. A phase's event belongs
    to the last claim before it (0: before any claim), so log lines need not carry the attempt."""

    starts: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # phase id -> [(seq, attempt)]

    def of(self, phase_id: int | None, seq: int) -> int:
        claims = self.starts.get(phase_id or 0, [])
        index = bisect.bisect_right(claims, (seq, ATTEMPT_MAX + 1)) - 1
        return claims[index][1] if index >= 0 else 0

    @property
    def highest(self) -> int:
        return max((number for claims in self.starts.values() for _, number in claims), default=0)

    def condition(self, attempt: int, phase_ids: list[int]) -> Q | None:
        """The events of ``attempt`` of these phases as seq ranges (None: no phase got that far)."""
        condition = None
        for phase_id in phase_ids:
            claims = self.starts.get(phase_id, [])
            for index, (seq, number) in enumerate(claims):
                if number == attempt:
                    span = Q(phase_id=phase_id, seq__gte=seq)
                    if index + 1 < len(claims):
                        span &= Q(seq__lt=claims[index + 1][0])
                    condition = span if condition is None else condition | span
        return condition


def log_attempts(*, phases: list[Phase]) -> Attempts:
    """The attempt starts of these phases (one query on the partial index event_claim_idx)."""
    starts: dict[int, list[tuple[int, int]]] = {}
    claims = (RunEvent.objects.filter(phase_id__in=[p.pk for p in phases], type=EventType.PHASE_CLAIMED)
              .order_by("phase_id", "seq").values_list("phase_id", "seq", "payload"))
    for phase_id, seq, payload in claims:
        known = starts.setdefault(phase_id, [])
        number = payload.get("attempt") if isinstance(payload, dict) else None
        known.append((seq, number if isinstance(number, int) else len(known) + 1))
    return Attempts(starts=starts)


def log_events(*, run: Run, log_filter: LogFilter, attempts: Attempts, phases: list[Phase]) -> QuerySet[RunEvent]:
    """The run's events of the filter's phase and attempt, unordered (the search is applied by
    the readers below, which bound it): one phase reads the (phase, seq) index."""
    if log_filter.phase is not None:
        events = RunEvent.objects.filter(phase_id=log_filter.phase.pk)
    else:
        events = RunEvent.objects.filter(run_id=run.pk)
    if log_filter.attempt is not None:
        ids = [log_filter.phase.pk] if log_filter.phase else [p.pk for p in phases]
        condition = attempts.condition(log_filter.attempt, ids)
        events = events.filter(condition) if condition is not None else events.none()
    return events


def log_searched(events: QuerySet[RunEvent], search: str) -> QuerySet[RunEvent]:
    """The events whose message contains ``search``, any case (LIKE's wildcards are plain text)."""
    return events.filter(message__icontains=search) if search else events


@dataclass
class LogLine:
    seq: int
    ts: dt.datetime
    level: str
    type: str
    phase: str
    attempt: int
    message: str
    parts: list[tuple[str, bool]] = field(default_factory=list)  # (text, is a search match)

    @property
    def label(self) -> str:
        return f"{self.phase}#{self.attempt}" if self.attempt else self.phase


def _lines(rows: list[tuple], *, names: dict[int, str], attempts: Attempts, search: str) -> list[LogLine]:
    pattern = re.compile(f"({re.escape(search)})", re.IGNORECASE) if search else None
    lines = []
    for seq, ts, level, type_, phase_id, message in rows:
        line = LogLine(seq, ts, level, type_, names.get(phase_id, ""), attempts.of(phase_id, seq) if phase_id else 0,
                       message)
        if pattern is not None:
            line.parts = [(text, i % 2 == 1) for i, text in enumerate(pattern.split(message)) if text]
        lines.append(line)
    return lines


@dataclass(frozen=True)
class LogWindow:
    lines: list[LogLine]
    earlier: int | None  # the ``before`` cursor of the next window back; None at the log's start
    capped: bool  # more matches than one window holds
    scanned_from: int | None = None  # a search looked at lines scanned_from..the window's end only
    newest: int = 0  # the newest seq this window looked at: where the live tail polls on from


def _newest_seq(events: QuerySet[RunEvent]) -> int:
    return events.order_by("-seq").values_list("seq", flat=True).first() or 0


def log_window_before(
    *, events: QuerySet[RunEvent], phases: list[Phase], attempts: Attempts, search: str = "",
    before: int | None = None, limit: int = LOG_WINDOW,
) -> LogWindow:
    """The last ``limit`` events before seq ``before`` (None: the tail), oldest first. A keyset
    read: as fast at line 1,000,000 as at line 10. A search reads at most SEARCH_SCAN lines back
    per window (a substring match has no index), and the next window searches on from there."""
    window = events if before is None else events.filter(seq__lt=before)
    scanned_from = top = None
    if search:
        top = before if before is not None else _newest_seq(events) + 1
        scanned_from = max(1, top - SEARCH_SCAN)
        window = log_searched(window.filter(seq__gte=scanned_from), search)
    rows = list(window.order_by("-seq").values_list(*_COLUMNS)[: limit + 1])
    capped = len(rows) > limit
    lines = _lines(rows[:limit][::-1], names={p.pk: p.name for p in phases}, attempts=attempts, search=search)
    earlier = lines[0].seq if capped else scanned_from if scanned_from and scanned_from > 1 else None
    newest = top - 1 if top is not None else lines[-1].seq if lines else 0
    return LogWindow(lines=lines, earlier=earlier, capped=capped, scanned_from=scanned_from, newest=newest)


def log_window_after(
    *, events: QuerySet[RunEvent], phases: list[Phase], attempts: Attempts, search: str = "", after: int,
    limit: int = LOG_WINDOW,
) -> tuple[list[LogLine], int, bool]:
    """The first ``limit`` events after seq ``after``, oldest first: what the live tail appends;
    with the cursor to poll after next and whether a full window was read (more may follow).
    A search reads at most SEARCH_SCAN lines per poll."""
    if not search:
        rows = list(events.filter(seq__gt=after).order_by("seq").values_list(*_COLUMNS)[:limit])
        cursor, full = (rows[-1][0] if rows else after), len(rows) == limit
    else:
        newest = _newest_seq(events)  # appends commit in seq order (the run row's lock): none is skipped
        upto = min(newest, after + SEARCH_SCAN)
        window = log_searched(events.filter(seq__gt=after, seq__lte=upto), search)
        rows = list(window.order_by("seq").values_list(*_COLUMNS)[:limit])
        full = len(rows) == limit or upto < newest
        cursor = rows[-1][0] if len(rows) == limit else max(after, upto)
    lines = _lines(rows, names={p.pk: p.name for p in phases}, attempts=attempts, search=search)
    return lines, cursor, full


def log_text(*, events: QuerySet[RunEvent], phases: list[Phase], attempts: Attempts) -> Iterator[str]:
    """Every event the filter keeps as ``ts level [phase#attempt] message`` lines, in seq order,
    read ``STREAM_CHUNK`` rows at a time (a server-side cursor on PostgreSQL)."""
    names = {p.pk: p.name for p in phases}
    rows = events.order_by("seq").values_list(*_COLUMNS).iterator(chunk_size=STREAM_CHUNK)
    batch: list[str] = []
    for seq, ts, level, _type, phase_id, message in rows:
        where = names.get(phase_id, "?") if phase_id else "run"
        attempt = attempts.of(phase_id, seq) if phase_id else 0
        label = f"{where}#{attempt}" if attempt else where
        stamp = ts.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        batch.append(f"{stamp} {level} [{label}] {message}\n")
        if len(batch) >= STREAM_CHUNK:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)
