"""The SQL editor on DuckDB: results, pagination, history, saved queries, sandbox, audit."""

import pytest

from connections.models import Connection
from controlroom.models import AuditEvent
from sqlwarehouse.models import QueryExecution, SavedQuery

pytestmark = pytest.mark.django_db
EDITOR = "/w/acme/sql/"


def run_sql(world, persona: str, sql: str, **extra) -> QueryExecution | None:
    connection = Connection.objects.get(workspace=world.workspace, name="warehouse")
    response = world.client(persona).post(EDITOR, {"sql": sql, "connection": connection.pk, "run": "1", **extra})
    assert response.status_code in (200, 302)
    return QueryExecution.objects.order_by("-id").first() if response.status_code == 302 else None


def test_run_paginate_and_find_in_history(world):
    execution = run_sql(world, "analyst", "SELECT range AS n, range + 1000 AS shifted FROM range(250)")
    assert execution.status == "succeeded" and execution.row_count == 250 and not execution.truncated
    client = world.client("analyst")
    page1 = client.get(f"/w/acme/sql/executions/{execution.pk}/").content.decode()
    assert "<td>99</td>" in page1 and "<td>100</td>" not in page1 and "Page 1 of 3" in page1
    page3 = client.get(f"/w/acme/sql/executions/{execution.pk}/?page=3").content.decode()
    assert "<td>249</td>" in page3 and "<td>1249</td>" in page3
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
    execution = run_sql(world, "analyst", "SELEC 1")
    page = world.client("analyst").get(f"/w/acme/sql/executions/{execution.pk}/").content.decode()
    assert execution.status == "failed" and "Parser Error: syntax error at or near" in page


def test_bad_input_gets_a_message_and_no_execution(world):
    assert run_sql(world, "analyst", "   ") is None
    assert run_sql(world, "analyst", "select 1\x00") is None
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


def test_big_numbers_keep_their_digits_and_row_cap_is_reported(world, settings):
    execution = run_sql(world, "analyst", "SELECT 9007199254740993::BIGINT AS big, 12345678901234.56::DECIMAL(18,2) d")
    assert execution.rows == [["9007199254740993", "12345678901234.56"]]
    settings.SQL_EDITOR_ROW_CAP = 50
    capped = run_sql(world, "analyst", "SELECT * FROM range(1000)")
    assert capped.row_count == 50 and capped.truncated
    assert "cut at the row cap" in world.client("analyst").get(f"/w/acme/sql/executions/{capped.pk}/").content.decode()


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
