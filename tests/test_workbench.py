"""The one-page SQL editor's server side: the run endpoint (JSON; writes need confirmed=1), the
LIMIT wrapping, Format SQL, the embedded results panel (plan for EXPLAIN, grouped numbers, no
chart where a chart shows nothing), share links that respect who may see an execution, and
every persona on the new endpoints."""

from __future__ import annotations

import pytest
from django.test import Client, TestCase

from connections.models import Connection
from sqlwarehouse.models import QueryExecution
from sqlwarehouse.result_display import chartable, display_rows, group_thousands, plan_text
from sqlwarehouse.workbench import format_sql, limited, parse_limit, unwrap_limit, write_kinds

pytestmark = pytest.mark.django_db
RUN = "/w/acme/sql/run/"
FORMAT = "/w/acme/sql/format/"


@pytest.fixture(autouse=True)
def _eager(eager_celery):
    """The worker's part runs in-process when the submit commits."""


def warehouse(world) -> Connection:
    return Connection.objects.get(workspace=world.workspace, name="warehouse")


def run(world, persona: str, sql: str, **extra) -> dict:
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = world.client(persona).post(RUN, {"sql": sql, "connection": warehouse(world).pk, **extra})
    return {"status": response.status_code, **response.json()}


@pytest.mark.parametrize(("sql", "kinds"), [
    ("select 1", []),
    ("with a as (select 1) select * from a", []),
    ("explain select 1", []),
    ("show tables; describe t; set threads = 2", []),
    ("drop table t", ["DROP TABLE"]),
    ("select 1; insert into t values (1); delete from t", ["INSERT", "DELETE"]),
    ("update t set a = 1", ["UPDATE"]),
    ("merge into t using s on t.a = s.a when matched then delete", ["MERGE"]),
    ("create table t as select 1", ["CREATE TABLE"]),
    ("alter table t add column b int", ["ALTER TABLE"]),
    ("truncate t", ["TRUNCATE"]),
    ("explain analyze delete from t", ["DELETE"]),
    ("select 'unterminated", []),  # the run reports it
])
def test_write_kinds(sql, kinds):
    assert write_kinds(sql, "duckdb") == kinds


def test_limit_wraps_one_query_only():
    assert parse_limit("100") == 100 and parse_limit("none") is None and parse_limit("7") == 1000
    assert limited("select * from t;", "duckdb", 100) == (
        "SELECT * FROM (\nselect * from t\n) AS limited LIMIT 100", 100)
    for untouched in ("select 1; select 2", "drop table t", "show tables"):
        assert limited(untouched, "duckdb", 100) == (untouched, None)
        assert limited(untouched, "trino", 100) == (untouched, None)
    assert limited("select 1", "duckdb", None) == ("select 1", None)
    assert unwrap_limit(limited("select :a\nfrom t", "duckdb", 10_000)[0]) == ("select :a\nfrom t", 10_000)
    assert unwrap_limit("select 1") == ("select 1", None)


@pytest.mark.parametrize(("sql", "dialect", "how"), [
    ("select * from t", "trino", "read"),  # Trino plans a LIMIT as one more stage: only 100 rows are read
    ("select a, count(*) from t group by a", "trino", "read"),
    ("select 1 union all select 2", "trino", "read"),
    ("with s as (select a from t order by a) select * from s", "trino", "read"),  # not the result's order
    ("select * from t", "duckdb", "wrap"),  # free on DuckDB
    ("values (1), (2)", "trino", "wrap"),  # not a SELECT: wrapped, as every query used to be
    ("select * from t order by a", "trino", "append"),  # the top 100 (a TopN); wrapped, the order was lost
    ("select * from t order by a desc", "duckdb", "append"),
    ("select 1 as a union all select 2 order by a", "trino", "append"),
    ("with s as (select a from t) select * from s order by a", "trino", "append"),
    ("(select * from t order by a)", "trino", "read"),
    ("select * from t order by a limit 5", "trino", "read"),  # its own LIMIT stays; 100 rows at most are read
    ("select * from t order by a offset 3", "duckdb", "read"),
])
def test_the_limit_keeps_a_querys_order_and_costs_trino_no_stage(sql, dialect, how):
    """Whatever the shape, the limit is kept as the execution's row limit, and the editor reopens
    the run as written."""
    ran, row_limit = limited(sql, dialect, 100)
    assert row_limit == 100
    expected = {"read": sql, "append": f"{sql}\nLIMIT 100",
                "wrap": f"SELECT * FROM (\n{sql}\n) AS limited LIMIT 100"}[how]
    assert ran == expected
    assert unwrap_limit(ran, row_limit) == (sql, 100)


def test_format_keeps_parameters_and_reports_errors():
    assert format_sql("select a,sum(b) from t where d > :since group by a", "duckdb") == (
        "SELECT\n  a,\n  SUM(b)\nFROM t\nWHERE\n  d > :since\nGROUP BY\n  a")
    assert format_sql("select 1; select 2", "trino") == "SELECT\n  1;\n\nSELECT\n  2"
    with pytest.raises(ValueError, match="could not be formatted"):
        format_sql("select (1", "duckdb")


def test_numbers_are_grouped_and_exact_values_kept():
    assert group_thousands(1234567) == "1,234,567" and group_thousands("9007199254740993") == "9,007,199,254,740,993"
    assert group_thousands("-1234.50") == "-1,234.50" and group_thousands(1234.5) == "1,234.5"
    assert group_thousands("1e+20") == "1e+20" and group_thousands("abc") == "abc"
    columns = [{"name": "n", "type": "BIGINT"}, {"name": "s", "type": "VARCHAR"}]
    cells = display_rows(columns, [[12345, "12345"], [None, "x"]])
    assert (cells[0][0].text, cells[0][0].exact, cells[0][0].number) == ("12,345", "12345", True)
    assert cells[0][1].text == "12345" and not cells[0][1].number and cells[1][0].null
    assert plan_text([["physical_plan", "┌───┐\n│ x │"]]) == "┌───┐\n│ x │"
    numeric = [{"name": "n", "type": "BIGINT"}]
    assert chartable(numeric, 2, explain=False) and not chartable(numeric, 1, explain=False)
    assert not chartable([{"name": "s", "type": "VARCHAR"}], 5, explain=False)
    assert not chartable(numeric, 9, explain=True)


def test_run_answers_json_and_the_panel_shows_the_result(world):
    answer = run(world, "analyst", "select range as n, range * 1000 as big from range(3)", limit="100")
    assert answer["status"] == 200 and answer["page_url"] == f"/w/acme/sql/?execution={answer['execution']}"
    execution = QueryExecution.objects.get(pk=answer["execution"])
    assert execution.sql.startswith("SELECT * FROM (\nselect range") and execution.sql.endswith("LIMIT 100")
    panel = world.client("analyst").get(answer["results_url"]).content.decode()
    assert panel.lstrip().startswith('<div id="results"') and "<html" not in panel
    assert 'data-status="succeeded"' in panel and 'hx-trigger' not in panel.split(">")[0]
    assert '<td class="num" data-v="2000">2,000</td>' in panel and 'id="copy-tsv"' in panel
    assert f"/w/acme/sql/?execution={execution.pk}" in panel  # the share link
    assert 'id="chart"' in panel


def test_a_write_needs_confirmation_before_it_is_recorded(world):
    before = QueryExecution.objects.count()
    answer = run(world, "admin", "create table confirm_me as select 1 as x")
    assert answer == {"status": 200, "confirm": ["CREATE TABLE"]} and QueryExecution.objects.count() == before
    answer = run(world, "admin", "create table confirm_me as select 1 as x", confirmed="1")
    assert QueryExecution.objects.get(pk=answer["execution"]).status == "succeeded"


def test_explain_is_a_plan_and_one_row_gets_no_chart(world):
    answer = run(world, "analyst", "select 1 as one", explain="1")
    panel = world.client("analyst").get(answer["results_url"]).content.decode()
    assert '<pre class="plan" id="plan">' in panel and 'id="result"' not in panel and 'id="chart"' not in panel
    answer = run(world, "analyst", "select 1 as one")
    panel = world.client("analyst").get(answer["results_url"]).content.decode()
    assert 'id="result"' in panel and 'id="chart"' not in panel
    answer = run(world, "analyst", "select 'a' as s union all select 'b'")
    assert 'id="chart"' not in world.client("analyst").get(answer["results_url"]).content.decode()


def test_errors_come_back_as_a_sentence(world):
    answer = run(world, "analyst", "")
    assert answer["status"] == 400 and answer["error"] == "Write a SQL statement first."
    answer = run(world, "analyst", "select * from no_such_table")
    panel = world.client("analyst").get(answer["results_url"]).content.decode()
    assert 'id="query-error"' in panel and "no_such_table" in panel


def test_share_link_opens_the_execution_for_who_may_see_it(world):
    answer = run(world, "analyst", "select 42 as answer")
    link = f"/w/acme/sql/?execution={answer['execution']}"
    page = world.client("analyst").get(link).content.decode()
    assert f'data-execution="{answer["execution"]}"' in page and "select 42 as answer" in page
    assert 'data-v="42">42</td>' in page  # the result is on the page at once
    assert world.client("admin").get(link).status_code == 200
    assert world.client("operator").get(link).status_code == 404  # someone else's, unsaved: not shared
    assert world.client("outsider").get(link).status_code == 404
    assert world.client("viewer").get(link).status_code == 403


def test_cancel_in_the_panel_stays_in_the_panel(world, django_capture_on_commit_callbacks, monkeypatch):
    from sqlwarehouse.execution import query_submit

    monkeypatch.setattr("sqlwarehouse.views.STATUS_WAIT_S", 0.05)  # the panel's request waits this long
    execution = query_submit(access=world.access("analyst"), connection=warehouse(world), sql="select 1")
    panel = world.client("analyst").get(f"/w/acme/sql/executions/{execution.pk}/?embed=1").content.decode()
    assert 'hx-trigger="load"' in panel and "?embed=1" in panel and 'id="cancel"' in panel
    response = world.client("analyst").post(f"/w/acme/sql/executions/{execution.pk}/cancel/?embed=1")
    assert response.status_code == 200 and 'data-status="cancelled"' in response.content.decode()


@pytest.mark.parametrize("persona", ["anonymous", "outsider", "viewer", "analyst", "operator", "admin"])
def test_new_endpoints_by_persona(world, persona):
    client = world.client(persona) if persona != "anonymous" else Client()
    data = {"sql": "select 1", "connection": warehouse(world).pk}
    expected = {"anonymous": 302, "outsider": 404, "viewer": 403}.get(persona, 200)
    for url in (RUN, FORMAT):
        with TestCase.captureOnCommitCallbacks(execute=True):
            assert client.post(url, data).status_code == expected, (persona, url)
    if expected == 200:
        assert client.post(FORMAT, data).json() == {"sql": "SELECT\n  1"}
        assert client.get(RUN).status_code == 405
