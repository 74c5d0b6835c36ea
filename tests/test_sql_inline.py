"""Inline runs (sqlwarehouse.inline): the editor's Run executes in the web process and answers
with the first rows in the same request; the rows are handed over before the file is stored;
the execution row stays the truth (claim, cancel, final state), and a full process, refused SQL
or a thread that could not claim its execution fall back to the worker queue as before.

These tests use real threads and the real database, so they run on transactional_db (a thread
cannot see a test transaction's rows)."""

from __future__ import annotations

import re
import threading
import time

import pyarrow as pa
import pytest
from django.db import OperationalError

from artifacts.models import Blob
from connections.models import Connection
from controlroom.models import AuditEvent
from sqlwarehouse import inline, tasks
from sqlwarehouse.engines import StatementStream
from sqlwarehouse.models import QueryExecution
from sqlwarehouse.results import PREVIEW_ROWS, store_stream

pytestmark = pytest.mark.django_db(transaction=True)
RUN = "/w/acme/sql/run/"


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The executions sent to the worker queue (nothing runs them: the tests look at the row)."""
    sent: list[int] = []
    monkeypatch.setattr(tasks.query_execute, "apply_async", lambda args, **kw: sent.append(args[0]))
    return sent


@pytest.fixture
def inline_on(settings):
    settings.SQL_INLINE_RUNS = 1
    yield
    deadline = time.monotonic() + 20  # every inline thread has ended and given its slot back
    while inline._running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert inline._running == 0


def post(world, sql: str, persona: str = "admin", **extra) -> dict:
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    response = world.client(persona).post(RUN, {"sql": sql, "connection": connection.pk, "limit": "none", **extra})
    return {"status": response.status_code, **response.json()}


def ended(execution_id: int, timeout_s: float = 20) -> QueryExecution:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        execution = QueryExecution.objects.get(pk=execution_id)
        if execution.is_terminal:
            return execution
        time.sleep(0.02)
    raise AssertionError(f"execution {execution_id} still {execution.status}")


def grid_rows(panel: str) -> int:
    return len(re.findall(r"<tr><td class=\"num muted\">", panel))


def test_run_answers_with_its_rows_and_stores_them_without_a_worker(world, inline_on, queued):
    answer = post(world, "select range as n, range * 2 as m from range(25)")
    assert answer["status"] == 200 and grid_rows(answer["panel"]) == 25
    execution = ended(answer["execution"])
    assert execution.status == "succeeded" and execution.row_count == 25 and execution.result_id
    assert queued == []  # the web process ran it
    audit = AuditEvent.objects.get(action="sql.execute", target_id=str(execution.pk))
    assert audit.after["status"] == "succeeded" and audit.after["rows"] == 25


def test_the_first_rows_show_while_the_file_is_being_stored(world, inline_on, queued, monkeypatch):
    """Storing is held until the answer is back: the answer has the rows, marked as being stored,
    and asks for the stored result, which then replaces them."""
    from sqlwarehouse import results

    release, real_store = threading.Event(), results.blob_store_file

    def held_store(**kwargs):
        assert release.wait(20)
        return real_store(**kwargs)

    monkeypatch.setattr(results, "blob_store_file", held_store)
    answer = post(world, "select range as n from range(250)")
    panel = answer["panel"]
    assert 'id="storing"' in panel and "First 100 rows; reading and storing the result" in panel
    assert grid_rows(panel) == PREVIEW_ROWS
    assert 'hx-trigger="load"' in panel and f"/sql/executions/{answer['execution']}/?embed=1" in panel
    assert QueryExecution.objects.get(pk=answer["execution"]).status == "running"
    release.set()
    execution = ended(answer["execution"])
    assert execution.status == "succeeded" and execution.row_count == 250
    final = world.client("admin").get(answer["results_url"]).content.decode()
    assert 'id="storing"' not in final and "/export.csv" in final and "250 rows" in final


def test_store_stream_hands_over_the_first_rows_before_writing():
    seen: list[tuple[int, int]] = []

    def stream(n: int) -> StatementStream:
        batches = [pa.record_batch([pa.array(range(i, min(i + 60, n)))], names=["n"]) for i in range(0, n, 60)]
        return StatementStream(["n"], ["BIGINT"], iter(batches))

    from controlroom.models import Workspace

    workspace = Workspace.objects.create(name="W", slug="w")
    on_preview = lambda columns, rows: seen.append((len(rows), Blob.objects.count()))  # noqa: E731
    stored = store_stream(stream(250), workspace=workspace, row_cap=10_000, on_preview=on_preview)
    assert seen == [(60, 0)] and stored.row_count == 250 and len(stored.preview) == PREVIEW_ROWS
    for rows, cap, first in ((25, 10_000, 25), (0, 10_000, 0), (250, 30, 30)):
        seen.clear()
        blobs = Blob.objects.count()
        store_stream(stream(rows), workspace=workspace, row_cap=cap, on_preview=on_preview)
        assert seen == [(first, blobs)]  # once, before this result's file is stored


def test_a_full_process_queues_for_the_worker(world, inline_on, queued):
    held = inline.inline_reserve()  # the one slot is taken
    assert held is not None and inline.inline_reserve() is None
    try:
        answer = post(world, "select 1 as x")
        assert "panel" not in answer and queued == [answer["execution"]]
        assert QueryExecution.objects.get(pk=answer["execution"]).status == "queued"
    finally:
        held.release()


def test_refused_sql_gives_the_slot_back(world, inline_on, queued):
    answer = post(world, "drop table t", persona="analyst", confirmed="1")
    execution = QueryExecution.objects.get(pk=answer["execution"])
    assert execution.status == "failed" and "read-only" in execution.error.lower()
    assert inline._running == 0 and queued == [] and "panel" not in answer
    bad = post(world, "")  # refused before anything is recorded
    assert bad["status"] == 400 and inline._running == 0


def test_an_engine_error_answers_with_the_final_panel(world, inline_on, queued):
    answer = post(world, "select * from no_such_table")
    assert 'id="query-error"' in answer["panel"] and "no_such_table" in answer["panel"]
    assert ended(answer["execution"]).status == "failed"


def test_several_statements_answer_once_they_have_all_run(world, inline_on, queued):
    answer = post(world, "select 1 as a; select 2 as b", confirmed="1")
    assert 'id="storing"' not in answer["panel"] and 'id="statements"' in answer["panel"]
    assert ended(answer["execution"]).status == "succeeded"


def test_a_thread_that_cannot_claim_queues_for_the_worker(world, inline_on, queued, monkeypatch):
    def database_away(**kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(inline, "query_execute", database_away)
    answer = post(world, "select 1 as x")
    assert QueryExecution.objects.get(pk=answer["execution"]).status == "queued"
    assert queued == [answer["execution"]]  # a worker will run it
    assert 'hx-trigger="load' in answer["panel"]  # the panel waits for that worker


def test_a_long_inline_query_answers_with_a_link_and_can_be_cancelled(world, inline_on, queued, monkeypatch):
    monkeypatch.setattr(inline, "INLINE_WAIT_S", 0.3)
    answer = post(world, "select count(*) from range(1000000000000) a")  # hours, unless cancelled
    assert "panel" not in answer and answer["results_url"].endswith("?embed=1")
    deadline = time.monotonic() + 10
    while QueryExecution.objects.get(pk=answer["execution"]).status != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    cancel = world.client("admin").post(f"/w/acme/sql/executions/{answer['execution']}/cancel/")
    assert cancel.status_code == 302
    execution = ended(answer["execution"])
    assert execution.status == "cancelled" and execution.error == "The query was cancelled."
    assert queued == []


def test_a_run_the_reaper_ended_meanwhile_keeps_the_reapers_verdict(world):
    """A run whose row was failed by the reaper while it ran (its process seemed gone) does not
    write its end over that, and records no second audit event: only the holder writes."""
    from sqlwarehouse.execution import query_execute, query_submit

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = query_submit(access=world.access("admin"), connection=connection, sql="select 42 as n", queue=False)

    def reaped(columns, rows):  # what executions_reap writes, while the engine has the rows
        QueryExecution.objects.filter(pk=execution.pk).update(status=QueryExecution.Status.FAILED, error="reaped")

    query_execute(execution_id=execution.pk, on_first_page=reaped)
    row = QueryExecution.objects.get(pk=execution.pk)
    assert (row.status, row.error, row.result_id, row.row_count) == ("failed", "reaped", None, 0)
    assert not AuditEvent.objects.filter(action="sql.execute", target_id=str(execution.pk)).exists()
