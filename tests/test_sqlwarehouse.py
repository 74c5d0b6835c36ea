"""The SQL editor on DuckDB: async execution, stored results and their pages, export, history,
saved queries, sandbox, read-only by parser and by engine, audit."""

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.test import TestCase

from connections.models import Connection
from controlroom.models import AuditEvent
from sqlwarehouse.models import QueryExecution, SavedQuery

pytestmark = pytest.mark.django_db
EDITOR = "/w/acme/sql/"


@pytest.fixture(autouse=True)
def _eager(eager_celery):
    """The worker's part runs in-process when the submit commits (see ``post``)."""


def post(client, data: dict):
    """POST to the editor; the commit hooks (the queued worker task) run before it returns."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(EDITOR, data)


def run_sql(world, persona: str, sql: str, **extra) -> QueryExecution | None:
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    response = post(world.client(persona), {"sql": sql, "connection": connection.pk, "run": "1", **extra})
    assert response.status_code in (200, 302)
    return QueryExecution.objects.order_by("-id").first() if response.status_code == 302 else None


def test_run_paginate_and_find_in_history(world):
    execution = run_sql(world, "analyst", "SELECT range AS n, range + 1000 AS shifted FROM range(250)")
    assert execution.status == "succeeded" and execution.row_count == 250 and not execution.truncated
    client = world.client("analyst")
    page1 = client.get(f"/w/acme/sql/executions/{execution.pk}/").content.decode()
    assert 'data-v="99">99</td>' in page1 and 'data-v="100"' not in page1 and "Page 1 of 3" in page1
    page3 = client.get(f"/w/acme/sql/executions/{execution.pk}/?page=3").content.decode()
    assert 'data-v="249">249</td>' in page3 and 'data-v="1249">1,249</td>' in page3  # grouped, exact kept
    history = client.get("/w/acme/sql/history/?q=shifted").content.decode()
    assert f"/w/acme/sql/executions/{execution.pk}/" in history
    assert "shifted" not in client.get("/w/acme/sql/history/?q=nomatch").content.decode()
    # History is personal: another analyst's execution is not reachable.
    assert world.client("operator").get(f"/w/acme/sql/executions/{execution.pk}/").status_code == 404


def test_every_execution_is_audited(world):
    run_sql(world, "analyst", "SELECT 42 AS answer")
    run_sql(world, "analyst", "SELECT * FROM missing_table")
    events = list(AuditEvent.objects.filter(action="sql.execute").order_by("id"))
    assert [e.after["status"] for e in events] == ["succeeded", "failed"]
    assert events[0].after["sql"] == "SELECT 42 AS answer" and events[0].actor_label == "analyst"
    assert "missing_table" in events[1].after["error"]


def test_sql_error_is_one_clear_message(world):
    execution = run_sql(world, "operator", "SELEC 1")  # the engine's own message
    page = world.client("operator").get(f"/w/acme/sql/executions/{execution.pk}/").content.decode()
    assert execution.status == "failed" and "Parser Error: syntax error at or near" in page
    refused = run_sql(world, "analyst", "SELEC 1")  # read-only: what cannot be parsed cannot be checked
    assert refused.status == "failed" and "could not be parsed" in refused.error


def test_bad_input_gets_a_message_and_no_execution(world):
    assert run_sql(world, "analyst", "   ") is None
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    nul = world.client("analyst").post(EDITOR, {"sql": "select 1\x00", "connection": connection.pk, "run": "1"})
    assert nul.status_code == 400 and "The field &#x27;sql&#x27; must not contain NUL" in nul.content.decode()
    response = world.client("analyst").post(EDITOR, {"sql": "select 1", "run": "1"})
    assert "Choose a connection of this workspace." in response.content.decode()
    foreign = Connection.objects.get(workspace=world.other)
    response = world.client("analyst").post(EDITOR, {"sql": "select 1", "connection": foreign.pk, "run": "1"})
    assert "Choose a connection of this workspace." in response.content.decode()
    assert not QueryExecution.objects.exists()


def test_analysts_read_operators_write(world):
    denied = run_sql(world, "analyst", "CREATE TABLE t AS SELECT 1 AS x")
    assert denied.status == "failed" and "read-only" in denied.error
    made = run_sql(world, "operator", "CREATE TABLE t AS SELECT 1 AS x")
    assert made.status == "succeeded"
    assert run_sql(world, "analyst", "SELECT x FROM t").rows == [[1]]
    assert world.client("viewer").get(EDITOR).status_code == 403


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY (SELECT 1) TO '/tmp/controlroom-escape.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "ATTACH '/tmp/controlroom-other.duckdb' AS other",
    "SET enable_external_access = true",
])
def test_the_sandbox_holds_even_for_operators(world, sql):
    execution = run_sql(world, "operator", sql)
    assert execution.status == "failed", execution.error
    assert any(word in execution.error for word in ("Permission Error", "disabled", "Cannot change"))


def test_big_numbers_keep_their_digits_and_row_cap_is_reported(world):
    execution = run_sql(world, "analyst", "SELECT 9007199254740993::BIGINT AS big, 12345678901234.56::DECIMAL(18,2) d")
    assert execution.rows == [["9007199254740993", "12345678901234.56"]]
    world.workspace.sql_row_cap = 50
    world.workspace.save()
    capped = run_sql(world, "analyst", "SELECT * FROM range(1000)")
    assert capped.row_count == 50 and capped.truncated and capped.manifest["rows"] == 50
    page = world.client("analyst").get(f"/w/acme/sql/executions/{capped.pk}/").content.decode()
    assert "Cut at the workspace's row cap of 50 rows." in page


def test_save_find_and_reopen_a_query(world):
    connection = Connection.objects.get(workspace=world.workspace)
    client = world.client("analyst")
    response = client.post(EDITOR, {"sql": "SELECT 1 AS one", "title": "Ones", "connection": connection.pk,
                                    "save": "1"})
    saved = SavedQuery.objects.get()
    assert response["Location"] == f"{EDITOR}?saved={saved.pk}" and saved.owner == world.users["analyst"]
    listing = world.client("viewer").get("/w/acme/sql/saved/?q=ones").content.decode()
    assert "Ones" in listing
    reopened = client.get(f"{EDITOR}?saved={saved.pk}").content.decode()
    assert "SELECT 1 AS one" in reopened
    client.post(EDITOR, {"sql": "SELECT 2 AS two", "title": "Ones", "connection": connection.pk, "save": "1",
                         "saved": saved.pk})
    saved.refresh_from_db()
    assert saved.sql == "SELECT 2 AS two" and SavedQuery.objects.count() == 1
    no_title = client.post(EDITOR, {"sql": "SELECT 3", "title": "", "connection": connection.pk, "save": "1"})
    assert "Give the query a title." in no_title.content.decode() and SavedQuery.objects.count() == 1
    assert world.client("analyst").get(f"{EDITOR}?saved=999").status_code == 404


def test_result_is_stored_as_parquet_and_pages_sort_and_export_from_it(world, monkeypatch):
    execution = run_sql(world, "analyst", "SELECT range AS n, (range * 7) % 250 AS m, 'r' || range AS label "
                                          "FROM range(250)")
    manifest = execution.manifest
    assert manifest["rows"] == 250 and manifest["sha256"] == execution.result_id
    assert [c["name"] for c in manifest["columns"]] == ["n", "m", "label"] and manifest["bytes"] > 0
    client = world.client("analyst")
    # From here on no engine may run: every page and export reads the stored file.
    import sqlwarehouse.execution
    import sqlwarehouse.schema

    for module in (sqlwarehouse.execution, sqlwarehouse.schema):  # where the engine is looked up
        monkeypatch.setattr(module, "open_engine", lambda *a, **k: pytest.fail("engine was asked again"))
    sorted_desc = client.get(f"/w/acme/sql/executions/{execution.pk}/?sort=m&dir=desc").content.decode()
    assert sorted_desc.index('data-v="249"') < sorted_desc.index('data-v="248"')
    last = client.get(f"/w/acme/sql/executions/{execution.pk}/?page=3").content.decode()
    assert "<td>r249</td>" in last and "<td>r199</td>" not in last
    exported = client.get(f"/w/acme/sql/executions/{execution.pk}/export.csv")
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert rows[0] == ["n", "m", "label"] and len(rows) == 251 and rows[250] == ["249", str(249 * 7 % 250), "r249"]
    parquet = client.get(f"/w/acme/sql/executions/{execution.pk}/export.parquet")
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.num_rows == 250 and table.column_names == ["n", "m", "label"]
    chart_rows = client.get(f"/w/acme/sql/executions/{execution.pk}/rows.json").json()
    assert len(chart_rows["rows"]) == 250 and chart_rows["columns"][1]["name"] == "m"


def test_statements_run_in_order_and_parameters_are_bound_as_values(world):
    made = run_sql(world, "operator", "CREATE TABLE p AS SELECT range AS n FROM range(10); "
                                      "INSERT INTO p VALUES (100); SELECT count(*) AS c, max(n) AS top FROM p")
    assert made.status == "succeeded", made.error
    assert made.rows == [[11, 100]]
    bound = run_sql(world, "analyst", "SELECT n FROM p WHERE n >= :low ORDER BY n", **{"param.low": "8"})
    assert bound.status == "succeeded" and bound.rows == [[8], [9], [100]] and bound.parameters == {"low": "8"}
    # A value is data, never SQL: a quote in it cannot change the statement.
    sneaky = run_sql(world, "analyst", "SELECT :name AS v", **{"param.name": "x' OR 1=1 --"})
    assert sneaky.rows == [["x' OR 1=1 --"]]
    missing = run_sql(world, "analyst", "SELECT :nothing AS v")
    assert missing.status == "failed" and "needs a value" in missing.error


def test_explain_shows_the_plan(world):
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    post(world.client("analyst"), {"sql": "SELECT 1 AS one", "connection": connection.pk, "explain": "1"})
    plan = QueryExecution.objects.get()
    assert plan.sql.startswith("EXPLAIN ") and plan.status == "succeeded" and plan.rows


def test_engine_refuses_writes_for_analysts_even_without_the_parser(world, settings):
    settings.SQL_PARSER_CHECK = False
    denied = run_sql(world, "analyst", "CREATE TABLE sneaky AS SELECT 1 AS x")
    assert denied.status == "failed" and "read-only" in denied.error.lower()


def test_prod_writes_need_an_admin(world):
    denied = run_sql(world, "operator", "CREATE TABLE prod_t AS SELECT 1 AS x", environment="prod")
    assert denied.status == "failed" and denied.read_only
    allowed = run_sql(world, "admin", "CREATE TABLE prod_t AS SELECT 1 AS x", environment="prod")
    assert allowed.status == "succeeded" and not allowed.read_only


def test_cancel_before_start_and_history_filters(world, django_capture_on_commit_callbacks):
    from sqlwarehouse.execution import query_cancel, query_submit

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    with django_capture_on_commit_callbacks(execute=False):  # no worker picks it up
        queued = query_submit(access=world.access("analyst"), connection=connection, sql="SELECT 1")
    assert queued.status == "queued"
    cancelled = query_cancel(access=world.access("analyst"), execution=queued)
    assert cancelled.status == "cancelled" and cancelled.finished_at
    from sqlwarehouse.execution import query_execute

    assert query_execute(execution_id=queued.pk) is None  # a late message runs nothing
    run_sql(world, "analyst", "SELECT 2 AS two")
    history = world.client("analyst").get("/w/acme/sql/history/?status=cancelled").content.decode()
    assert f"/w/acme/sql/executions/{queued.pk}/" in history and "SELECT 2 AS two" not in history


def test_oversized_sql_is_refused_before_anything_runs(world):
    response = world.client("analyst").post(EDITOR, {"sql": "SELECT 1 AS x -- " + "x" * 200_001, "run": "1",
                                                     "connection": Connection.objects.get(workspace=world.workspace,
                                                                                          name="warehouse").pk})
    assert "the editor runs at most 200,000" in response.content.decode()
    assert not QueryExecution.objects.exists()


@pytest.mark.slow  # ~7 s: the whole corpus through DuckDB
def test_duckdb_alone_stops_the_bypass_corpus(world, settings):
    """With the parser switched off, the read-only, sandboxed DuckDB refuses every write and
    escape of the corpus, or runs it without changing anything: the database file is byte for
    byte the same afterwards (session-only statements and temporary objects die with the
    query's connection)."""
    import hashlib

    from sqlwarehouse.engines import duckdb_engine_for
    from tests.sql_bypass_corpus import ENGINE_BYPASSES

    setup = run_sql(world, "operator", "CREATE TABLE t (a INTEGER); CREATE TABLE s (a INTEGER); "
                                       "CREATE SEQUENCE seq; INSERT INTO t VALUES (1), (2); INSERT INTO s VALUES (1); "
                                       "CHECKPOINT")
    assert setup.status == "succeeded", setup.error
    database = duckdb_engine_for(Connection.objects.get(workspace=world.workspace, name="warehouse"),
                                 read_only=True, environment=world.workspace.environments.get(name="dev")).database
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    settings.SQL_PARSER_CHECK = False
    ran = [sql for dialect, sql, _ in ENGINE_BYPASSES
           if dialect == "duckdb" and run_sql(world, "analyst", sql).status == "succeeded"]
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before, f"the database changed; ran: {ran}"
    state = run_sql(world, "operator", "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM s), nextval('seq'), "
                                       "(SELECT count(*) FROM duckdb_tables() WHERE NOT temporary), "
                                       "(SELECT count(*) FROM duckdb_views() WHERE NOT internal AND NOT temporary)")
    assert state.rows == [[2, 1, 1, 2, 0]], f"state changed; statements that ran: {ran}"
    written = [p for p in ("out.csv", "out.parquet", "dump") if Path(p).exists() or (database.parent / p).exists()]
    assert not written, f"the corpus wrote files: {written}"


def test_an_execution_whose_worker_died_is_failed_and_audited(world):
    from datetime import timedelta

    from django.utils import timezone

    from sqlwarehouse.execution import executions_reap

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    now = timezone.now()
    lost = QueryExecution.objects.create(workspace=world.workspace, user=world.users["analyst"], connection=connection,
                                         sql="SELECT 1", engine="duckdb", status="running", started_at=now,
                                         heartbeat_at=now - timedelta(seconds=120))
    alive = QueryExecution.objects.create(workspace=world.workspace, user=world.users["analyst"],
                                          connection=connection, sql="SELECT 2", engine="duckdb", status="running",
                                          started_at=now, heartbeat_at=now)
    assert executions_reap() == [lost.pk]
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert lost.status == "failed" and "stopped before it finished" in lost.error and alive.status == "running"
    assert AuditEvent.objects.get(action="sql.execute").after["status"] == "failed"


def test_a_running_execution_shows_live_status_and_stops_polling_when_done(world):
    from django.utils import timezone

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    execution = QueryExecution.objects.create(
        workspace=world.workspace, user=world.users["analyst"], connection=connection, sql="SELECT 1", engine="duckdb",
        status="running", started_at=timezone.now(), progress={"completed_splits": 3, "total_splits": 8,
                                                               "stored_rows": 1200, "statement": 2, "statements": 3})
    url = f"/w/acme/sql/executions/{execution.pk}/status/"
    client = world.client("analyst")
    running = client.get(url)
    body = running.content.decode()
    assert running.status_code == 200 and 'hx-trigger="every 500ms"' in body
    assert "3/8 splits" in body and "1200 rows so far" in body and "statement 2 of 3" in body and 'id="cancel"' in body
    QueryExecution.objects.filter(pk=execution.pk).update(status="succeeded", finished_at=timezone.now(), row_count=1)
    done = client.get(url)
    assert done.status_code == 286 and "hx-trigger" not in done.content.decode()


def test_admins_can_see_everyones_history(world):
    run_sql(world, "analyst", "SELECT 'mine' AS who")
    assert "SELECT &#x27;mine&#x27;" not in world.client("admin").get("/w/acme/sql/history/").content.decode()
    everyone = world.client("admin").get("/w/acme/sql/history/?all=1").content.decode()
    assert "SELECT &#x27;mine&#x27;" in everyone and "<td>analyst</td>" in everyone
    # Others cannot widen their view.
    assert "mine" not in world.client("operator").get("/w/acme/sql/history/?all=1").content.decode()
    theirs = QueryExecution.objects.get()
    assert world.client("admin").get(f"/w/acme/sql/executions/{theirs.pk}/").status_code == 200
    assert world.client("operator").get(f"/w/acme/sql/executions/{theirs.pk}/").status_code == 404


def test_a_huge_cell_fails_clearly_and_long_cells_are_cut_in_pages_only(world, settings, monkeypatch):
    monkeypatch.setattr("sqlwarehouse.results.BATCH_MAX_BYTES", 2**20)
    huge = run_sql(world, "analyst", "SELECT repeat('x', 3 * 1024 * 1024) AS s")
    assert huge.status == "failed" and "select fewer or narrower columns" in huge.error
    long = run_sql(world, "analyst", "SELECT repeat('y', 10000) AS s")
    assert long.status == "succeeded" and long.rows[0][0].startswith("y" * 2000)
    assert "10,000 characters" in long.rows[0][0]
    page = world.client("analyst").get(f"/w/acme/sql/executions/{long.pk}/").content.decode()
    assert "y" * 2001 not in page
    export = world.client("analyst").get(f"/w/acme/sql/executions/{long.pk}/export.csv")
    assert ("y" * 10000).encode() in b"".join(export.streaming_content)  # the stored result keeps it whole


def test_duckdb_has_a_memory_limit_and_spills_outside_the_warehouse(world, settings):
    settings.DUCKDB_MEMORY_LIMIT = "64MB"
    big = run_sql(world, "analyst", "SELECT length(string_agg(repeat('z', 1000), '')) FROM range(200000)")
    assert big.status == "failed" and "memory" in big.error.lower()
    where = run_sql(world, "operator", "SELECT current_setting('temp_directory')")
    assert not where.rows[0][0].startswith(str(settings.WAREHOUSE_DIR))
    planted = run_sql(world, "operator", "COPY (SELECT 1 AS a) TO '" + str(settings.WAREHOUSE_DIR / "acme" / "dev" /
                                          "warehouse.duckdb.tmp" / "planted.csv") + "'")
    assert planted.status == "failed"


def test_cancelling_a_query_is_audited_with_the_canceller_as_actor(world, django_capture_on_commit_callbacks):
    from sqlwarehouse.execution import query_cancel, query_submit

    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    with django_capture_on_commit_callbacks(execute=False):  # no worker picks them up
        queued, running = (query_submit(access=world.access("analyst"), connection=connection, sql=f"SELECT {n}")
                           for n in (1, 2))
    QueryExecution.objects.filter(pk=running.pk).update(status=QueryExecution.Status.RUNNING)
    running.refresh_from_db()
    admin = world.users["admin"]
    for execution in (queued, running):
        query_cancel(access=world.access("admin"), execution=execution)
        query_cancel(access=world.access("admin"), execution=execution)  # again: nothing more to record
    events = list(AuditEvent.objects.filter(action="sql.cancel").order_by("id"))
    assert [(e.target_id, e.after["status"]) for e in events] == [(str(queued.pk), "queued"),
                                                                  (str(running.pk), "running")]
    assert all(e.actor_user_id == admin.pk and e.actor_label == "admin" and e.after["user"] == "analyst"
               and e.workspace == world.workspace for e in events)
    assert QueryExecution.objects.get(pk=running.pk).cancel_requested
