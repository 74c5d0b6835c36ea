"""The run page's log: phase and attempt filters (also on the live tail), search with highlights,
the streamed download, the tail window with "load earlier", bad filter values, personas."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from runs import log_selectors
from runs.models import EventType, Run, RunEvent, RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_create
from tests.test_contract import DIAMOND

pytestmark = pytest.mark.django_db

LINE = re.compile(r'<div class="line [a-z]+" data-seq="(\d+)">')


def make_run(world, django_capture_on_commit_callbacks, *, status: str = RunStatus.SUCCEEDED) -> Run:
    """A run of the diamond job (phases a, b, c, d) whose worker never ran: the log is ours to write."""
    job = job_create(access=world.access("operator"), spec_text=DIAMOND.replace("diamond", f"d{Run.objects.count()}"))
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    Run.objects.filter(pk=run.pk).update(status=status)
    run.refresh_from_db()
    return run


def write(run: Run, entries: list[tuple[str | None, str, str]], *, level: str = "info") -> None:
    """Append (phase name, type, message) events after the run's last seq; a PHASE_CLAIMED
    message 'attempt N' starts attempt N of its phase."""
    phases = {p.name: p for p in run.phases.all()}
    first = run.last_seq + 1
    now = timezone.now()
    events = []
    for i, (phase, type_, message) in enumerate(entries):
        payload = {"attempt": int(message.split()[-1])} if type_ == EventType.PHASE_CLAIMED else {}
        events.append(RunEvent(run_id=run.pk, phase=phases[phase] if phase else None, seq=first + i, type=type_,
                               level=level, message=message, payload=payload, ts=now, event_id=uuid.uuid4()))
    RunEvent.objects.bulk_create(events, batch_size=2000)
    run.last_seq = first + len(entries) - 1
    Run.objects.filter(pk=run.pk).update(last_seq=run.last_seq)


def log_lines(phase: str, count: int, text: str) -> list[tuple[str, str, str]]:
    return [(phase, EventType.PHASE_LOG, f"{text} {i}") for i in range(count)]


def seqs(html: str) -> list[int]:
    return [int(s) for s in LINE.findall(html)]


@pytest.fixture
def two_attempts(world, django_capture_on_commit_callbacks) -> Run:
    """Phase a: attempt 1 (3 lines, failed) then attempt 2 (2 lines); phase b: attempt 1 (2 lines)."""
    run = make_run(world, django_capture_on_commit_callbacks)
    write(run, [("a", EventType.PHASE_CLAIMED, "a claimed, attempt 1"), *log_lines("a", 3, "a first try"),
                ("a", EventType.PHASE_FAILED, "a boom"), ("a", EventType.PHASE_CLAIMED, "a claimed, attempt 2"),
                *log_lines("a", 2, "a second try"), ("b", EventType.PHASE_CLAIMED, "b claimed, attempt 1"),
                *log_lines("b", 2, "b only try"), (None, EventType.RUN_SUCCEEDED, "run done")])
    return run


def page(world, run: Run, query: str = "", persona: str = "viewer"):
    return world.client(persona).get(f"/w/acme/runs/{run.pk}/" + (f"?{query}" if query else ""))


def test_tail_window_then_load_earlier_by_seq(world, django_capture_on_commit_callbacks):
    run = make_run(world, django_capture_on_commit_callbacks)
    write(run, log_lines("a", 1200, "line"))
    html = page(world, run).content.decode()
    shown = seqs(html)
    assert len(shown) == 500 and shown[-1] == run.last_seq and shown == sorted(shown)
    assert "The last 500 lines; earlier ones load on demand." in html
    link = re.search(r'hx-get="([^"]+before=(\d+))"', html)
    assert int(link.group(2)) == shown[0]
    client = world.client("viewer")
    earlier = client.get(link.group(1).replace("&amp;", "&")).content.decode()
    older = seqs(earlier)
    assert len(older) == 500 and older[-1] == shown[0] - 1 and 'id="log-earlier"' in earlier
    last = client.get(f"/w/acme/runs/{run.pk}/log/?before={older[0]}").content.decode()
    first_lines = seqs(last)
    assert first_lines == list(range(1, older[0])) and 'id="log-earlier"' not in last  # the log's beginning


def test_filter_by_phase_and_attempt(world, two_attempts):
    run = two_attempts
    html = page(world, run, "phase=a&attempt=2").content.decode()
    assert "a second try 0" in html and "a second try 1" in html and "[a#2]" in html
    assert "first try" not in html and "b only try" not in html and "run done" not in html
    assert '<option selected>a</option>' in html and '<option selected>2</option>' in html
    only_b = page(world, run, "phase=b").content.decode()
    assert "b only try 1" in only_b and "[b#1]" in only_b and "try 0" not in only_b.replace("b only try 0", "")
    first = page(world, run, "attempt=1").content.decode()  # attempt 1 of every phase
    assert "a first try 2" in first and "a boom" in first and "b only try 0" in first
    assert "second try" not in first and "run done" not in first
    none = page(world, run, "attempt=9999").content.decode()
    assert seqs(none) == [] and "No log lines match yet." in none
    assert re.findall(r"<option[^>]*>(\d+)</option>", none) == ["1", "2", "9999"]  # not 9,999 options
    everything = page(world, run).content.decode()
    assert len(seqs(everything)) == run.last_seq and "[a#1]" in everything and "[a#2]" in everything


def test_the_filter_applies_to_the_live_tail(world, django_capture_on_commit_callbacks):
    run = make_run(world, django_capture_on_commit_callbacks, status=RunStatus.RUNNING)
    write(run, [("a", EventType.PHASE_CLAIMED, "a claimed, attempt 1"), *log_lines("a", 2, "early")])
    html = page(world, run, "phase=b&q=NEW").content.decode()
    poller = re.search(r'hx-get="([^"]+after=(\d+))" hx-trigger="every 1s"', html)
    assert poller and "phase=b" in poller.group(1) and "q=NEW" in poller.group(1)
    write(run, [*log_lines("a", 2, "new on a"), ("b", EventType.PHASE_CLAIMED, "b claimed, attempt 1"),
                *log_lines("b", 2, "new on b"), *log_lines("b", 1, "other on b")])
    tail = world.client("viewer").get(poller.group(1).replace("&amp;", "&"))
    text = tail.content.decode()
    assert "<mark>new</mark> on b 0" in text and "<mark>new</mark> on b 1" in text
    assert "on a" not in text and "other on b" not in text and tail.status_code == 200
    next_poll = re.search(r'after=(\d+)', text)
    assert int(next_poll.group(1)) == run.last_seq  # past every line searched, matched or not


def test_a_search_reads_a_bounded_span_per_request(world, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(log_selectors, "SEARCH_SCAN", 100)
    run = make_run(world, django_capture_on_commit_callbacks, status=RunStatus.RUNNING)
    write(run, [("a", EventType.PHASE_LOG, "rare needle"), *log_lines("a", 250, "hay")])  # seq 2, then 3..252
    html = page(world, run, "q=needle").content.decode()
    assert seqs(html) == [] and "0 matches in the last 100 lines; load earlier matches to search further back." in html
    client = world.client("viewer")
    cursor = re.search(r'hx-get="([^"]+before=(\d+))"', html)
    assert int(cursor.group(2)) == run.last_seq - 99
    second = client.get(cursor.group(1).replace("&amp;", "&")).content.decode()
    assert seqs(second) == [] and 'id="log-earlier"' in second
    third = client.get(re.search(r'hx-get="([^"]+before=\d+)"', second).group(1).replace("&amp;", "&"))
    assert seqs(third.content.decode()) == [2] and "<mark>needle</mark>" in third.content.decode()
    assert 'id="log-earlier"' not in third.content.decode()  # the log's first line was searched
    poller = re.search(r'after=(\d+)" hx-trigger', html)
    assert int(poller.group(1)) == run.last_seq  # the live tail goes on from the newest line searched
    write(run, [*log_lines("a", 150, "more hay"), ("a", EventType.PHASE_LOG, "late NEEDLE")])
    tail = client.get(f"/w/acme/runs/{run.pk}/log/?q=needle&after={poller.group(1)}").content.decode()
    assert seqs(tail) == [] and re.search(r"after=(\d+)", tail).group(1) == str(run.last_seq - 51)
    tail = client.get(f"/w/acme/runs/{run.pk}/log/?q=needle&after={run.last_seq - 51}").content.decode()
    assert seqs(tail) == [run.last_seq] and "late <mark>NEEDLE</mark>" in tail


def test_live_tail_stops_when_the_run_has_ended(world, two_attempts):
    tail = world.client("viewer").get(f"/w/acme/runs/{two_attempts.pk}/log/?after=3&phase=a")
    assert tail.status_code == 286 and "hx-trigger" not in tail.content.decode()
    assert seqs(tail.content.decode()) == list(range(4, 10))  # a's events after seq 3 (RUN_CREATED is 1)


def test_search_is_case_insensitive_highlighted_escaped_and_capped(world, django_capture_on_commit_callbacks):
    run = make_run(world, django_capture_on_commit_callbacks)
    write(run, [*log_lines("a", 700, "Disk ERROR on node"), *log_lines("b", 300, "all fine"),
                ("c", EventType.PHASE_LOG, "<script>alert(1)</script> error in c")])
    html = page(world, run, "q=error").content.decode()
    found = seqs(html)
    assert len(found) == 500 and found[-1] == run.last_seq  # the newest 500 matches
    assert "the last 500 matches are shown; load earlier matches for more." in html
    assert "Disk <mark>ERROR</mark> on node 699" in html and "all fine" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; <mark>error</mark> in c" in html and "<script>alert" not in html
    earlier = re.search(r'hx-get="([^"]+before=\d+)"', html).group(1).replace("&amp;", "&")
    assert "q=error" in earlier
    rest = world.client("viewer").get(earlier).content.decode()
    assert len(seqs(rest)) == 201 and 'id="log-earlier"' not in rest and "<mark>ERROR</mark>" in rest
    scoped = page(world, run, "q=node+69&phase=a").content.decode()
    assert len(seqs(scoped)) == 11 and "11 matches." in scoped  # "node 69" and "node 690".."node 699"
    percent = page(world, run, "q=%25").content.decode()  # LIKE wildcards are plain text
    assert seqs(percent) == [] and "0 matches." in percent


@pytest.mark.parametrize(("query", "message"), [
    ("phase=nope", "This run has no phase named &#x27;nope&#x27;; showing all phases."),
    ("attempt=abc", "The attempt must be a whole number from 1 to 10,000; showing all attempts."),
    ("attempt=" + "1" + "0" * 40, "The attempt must be a whole number from 1 to 10,000"),
    ("attempt=10**40", "The attempt must be a whole number"),
    ("attempt=0", "The attempt must be a whole number"),
    ("attempt=-1", "The attempt must be a whole number"),
    ("attempt=10001", "The attempt must be a whole number"),
    ("attempt=%C2%B2", "The attempt must be a whole number"),
    ("q=" + "x" * 300, "Searches are at most 200 characters"),
])
def test_bad_filter_values_are_one_sentence_not_a_500(world, two_attempts, query, message):
    response = page(world, two_attempts, query)
    assert response.status_code == 200 and message in response.content.decode()
    fragment = world.client("viewer").get(f"/w/acme/runs/{two_attempts.pk}/log/?after=0&{query}")
    download = world.client("viewer").get(f"/w/acme/runs/{two_attempts.pk}/log/download/?{query}")
    assert fragment.status_code == download.status_code == 400
    assert fragment.content.decode().startswith(("This run", "The attempt", "Searches"))


@pytest.mark.parametrize("cursor", ["before=abc", "before=-1", "before=" + "9" * 40, "before=", "after=x"])
def test_bad_cursors(world, two_attempts, cursor):
    response = world.client("viewer").get(f"/w/acme/runs/{two_attempts.pk}/log/?{cursor}")
    assert response.status_code in (200, 286, 400)
    if cursor.startswith("before"):
        assert response.status_code == 400 and response.content == b"'before' must be a line number."


def test_download_streams_every_line_in_order(world, django_capture_on_commit_callbacks, monkeypatch):
    run = make_run(world, django_capture_on_commit_callbacks)
    write(run, [("a", EventType.PHASE_CLAIMED, "a claimed, attempt 1"), *log_lines("a", 4999, "row"),
                (None, EventType.RUN_SUCCEEDED, "password=******** stays masked")])
    response = world.client("viewer").get(f"/w/acme/runs/{run.pk}/log/download/")
    assert response.streaming and response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}.log"'
    chunks = [c.decode() for c in response.streaming_content]
    assert len(chunks) >= 5000 // log_selectors.STREAM_CHUNK  # yielded piece by piece, not one string
    lines = "".join(chunks).splitlines()
    assert len(lines) == 5002 and lines[0].endswith(" info [run] run of d0 v1 in dev by operator")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info \[a#1\] a claimed, attempt 1", lines[1])
    assert lines[2].endswith(" info [a#1] row 0") and lines[5000].endswith(" [a#1] row 4998")
    assert lines[-1].endswith(" info [run] password=******** stays masked")


def test_download_of_a_filter(world, two_attempts):
    response = world.client("viewer").get(f"/w/acme/runs/{two_attempts.pk}/log/download/?phase=a&attempt=2&q=TRY")
    assert response["Content-Disposition"] == f'attachment; filename="run-{two_attempts.pk}-a-attempt-2-search.log"'
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["info [a#2] a second try 0", "info [a#2] a second try 1"]
    link = page(world, two_attempts, "phase=a&attempt=2&q=TRY").content.decode()
    assert f'href="/w/acme/runs/{two_attempts.pk}/log/download/?phase=a&amp;attempt=2&amp;q=TRY"' in link


@pytest.mark.parametrize("path", ["", "log/?after=0", "log/?before=5", "log/download/"])
def test_personas(world, two_attempts, path):
    url = f"/w/acme/runs/{two_attempts.pk}/{path}"
    assert world.client("viewer").get(url).status_code in (200, 286)
    assert world.client("outsider").get(url).status_code == 404
    assert "/accounts/login/" in Client().get(url).get("Location", "")


def test_page_query_count_does_not_grow_with_the_log(world, django_capture_on_commit_callbacks,
                                                     django_assert_max_num_queries):
    run = make_run(world, django_capture_on_commit_callbacks)
    write(run, [("a", EventType.PHASE_CLAIMED, "a claimed, attempt 1"), *log_lines("a", 3000, "x"),
                ("b", EventType.PHASE_CLAIMED, "b claimed, attempt 1"), *log_lines("b", 3000, "y")])
    client = world.client("viewer")
    for query in ("", "phase=b&attempt=1&q=y"):
        with django_assert_max_num_queries(14):
            assert client.get(f"/w/acme/runs/{run.pk}/?{query}").status_code == 200
        with django_assert_max_num_queries(8):
            assert client.get(f"/w/acme/runs/{run.pk}/log/?before=3000&{query}").status_code == 200


def _plan(sql: str, params) -> str:
    """The database's plan of ``sql``. PostgreSQL would read tables this small sequentially, or,
    with statistics from earlier tests, through a bitmap of the index and then sort; both are
    switched off for the statement, so the plan shows whether an index serves the order."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            return " ".join(str(row[-1]) for row in cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return " ".join(row[0] for row in cursor.fetchall())


def test_windows_read_an_index(world, two_attempts):
    phases = list(two_attempts.phases.all())
    attempts = log_selectors.log_attempts(phases=phases)
    sqlite = connection.vendor == "sqlite"
    sort = "TEMP B-TREE" if sqlite else "Sort "  # a sort of the rows read: no index gave the order

    def plan(query: str) -> str:
        log_filter, _ = log_selectors.log_filter_parse(phases=phases, query=_query(query))
        events = log_selectors.log_events(run=two_attempts, log_filter=log_filter, attempts=attempts, phases=phases)
        window = events.filter(seq__lt=100).order_by("-seq").values_list("seq", "ts", "message")[:501]
        return _plan(*window.query.sql_with_params())

    by_run = "INDEX sqlite_autoindex_runs_runevent_2 (run_id=? AND seq<?)" if sqlite else "uniq_event_seq"
    assert by_run in plan("") and sort not in plan("")  # the (run, seq) unique index
    assert "event_phase_seq_idx" in plan("phase=a") and sort not in plan("phase=a")
    assert "event_phase_seq_idx" in plan("phase=a&attempt=2")
    claims = RunEvent.objects.filter(phase_id__in=[p.pk for p in phases], type=EventType.PHASE_CLAIMED)
    assert "event_claim_idx" in _plan(*claims.order_by("phase_id", "seq").values_list("seq").query.sql_with_params())


def _query(text: str):
    from django.http import QueryDict

    return QueryDict(text)
