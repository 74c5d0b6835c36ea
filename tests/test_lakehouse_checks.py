"""Data-quality checks: the evaluator (lakehouse.checks) and the `check` phase kind."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse.checks import CheckError, checks_config_errors, evaluate_checks, parse_max_age
from lakehouse.phases.check import config_errors

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def con():
    orders = pa.table({
        "id": [1, 2, 3, 4, 4],
        "customer name": ["Ann", None, "O'Brien", "Bob", "Bob"],
        "status": ["new", "paid", "paid", "lost", "new"],
        "amount": pa.array([10.5, -1.0, 20.0, 99.0, 5.0]),
        "at": pa.array([NOW - dt.timedelta(hours=h) for h in (30, 5, 3, 2, 1)], pa.timestamp("us", tz="UTC")),
    })
    connection = duckdb.connect()
    connection.register("checked", orders)
    yield connection
    connection.close()


def run(con, *checks: dict) -> tuple[dict, pa.Table | None]:
    results, rows = evaluate_checks(con, list(checks), now=NOW)
    return {r.name: r for r in results}, rows


def test_every_check_type_passes_and_fails(con) -> None:
    results, rows = run(
        con,
        {"name": "ids", "type": "not_null", "columns": ["id", "status"]},
        {"name": "names", "type": "not_null", "column": "customer name", "severity": "warn"},
        {"name": "unique ids", "type": "unique", "column": "id"},
        {"name": "unique pair", "type": "unique", "columns": ["id", "status"]},
        {"name": "statuses", "type": "accepted_values", "column": "status", "values": ["new", "paid"]},
        {"name": "names ok", "type": "accepted_values", "column": "customer name",
         "values": ["Ann", "O'Brien", "Bob"]},
        {"name": "amounts", "type": "range", "column": "amount", "min": 0, "max": 50},
        {"name": "days", "type": "range", "column": "at", "min": "2026-01-01"},
        {"name": "rows", "type": "row_count", "min": 1, "max": 5},
        {"name": "too few", "type": "row_count", "min": 6},
        {"name": "fresh", "type": "freshness", "column": "at", "max_age": "2h"},
        {"name": "stale", "type": "freshness", "column": "at", "max_age": "30m"},
        {"name": "positive", "type": "sql", "predicate": "amount > 0 AND \"customer name\" <> 'Bob'"},
    )
    failing = {name: r.failing for name, r in results.items()}
    assert failing == {"ids": 0, "names": 1, "unique ids": 2, "unique pair": 0, "statuses": 1, "names ok": 0,
                       "amounts": 2, "days": 0, "rows": 0, "too few": 1, "fresh": 0, "stale": 1, "positive": 3}
    assert results["names"].status == "warn" and results["unique ids"].status == "fail"
    assert results["ids"].status == "pass" and results["rows"].observed == 5
    assert results["stale"].message == "newest value is 1.0h old, more than 30m"
    # Failing rows: one row per failing row of a row-level check, named by its check.
    assert rows is not None and rows.column_names[0] == "failed_check"
    caught = rows.to_pylist()
    assert sorted(r["id"] for r in caught if r["failed_check"] == "amounts") == [2, 4]
    assert {r["failed_check"] for r in caught} == {"names", "unique ids", "statuses", "amounts", "positive"}
    assert len(caught) == 1 + 2 + 1 + 2 + 3


def test_failing_rows_are_capped_but_counted() -> None:
    con = duckdb.connect()
    con.register("checked", pa.table({"x": pa.array([None] * 500, pa.int64())}))
    results, rows = evaluate_checks(con, [{"name": "x", "type": "not_null", "column": "x"}], cap=100)
    assert results[0].failing == 500 and rows.num_rows == 100


def test_values_are_bound_never_pasted(con) -> None:
    quote = "x' OR '1'='1"
    results, _ = run(con, {"name": "v", "type": "accepted_values", "column": "status", "values": [quote]})
    assert results["v"].failing == 5  # the quote is a value that no row has, not SQL
    with pytest.raises(CheckError, match="does not have"):
        run(con, {"name": "c", "type": "not_null", "column": 'id" IS NULL OR "id'})


def test_a_predicate_cannot_reach_files_or_run_statements() -> None:
    """In the phase's own DuckDB (external access off), a predicate sees only the checked rows."""
    assert "'predicate' must be one SQL boolean expression (no ';')" in " ".join(checks_config_errors(
        [{"name": "p", "type": "sql", "predicate": "true; DROP TABLE x"}]))
    con = duckdb.connect()
    con.register("checked", pa.table({"x": [1]}))
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.Error, match="disabled"):
        evaluate_checks(con, [{"name": "p", "type": "sql",
                               "predicate": "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0"}])


def test_config_errors_name_each_problem() -> None:
    assert checks_config_errors([{"name": "a", "type": "not_null", "column": "x"}]) == []
    errors = checks_config_errors([
        {"name": "a", "type": "nope"},
        {"name": "a", "type": "range", "column": "x"},
        {"type": "row_count", "min": -1, "extra": 1},
        {"name": "f", "type": "freshness", "column": "t", "max_age": "soon", "severity": "panic"},
        {"name": "v", "type": "accepted_values", "column": "s", "values": []},
    ])
    text = "\n".join(errors)
    for expected in ("'type' must be one of", "check 'a' is named twice", "give 'min', 'max' or both",
                     "needs a 'name'", "unknown field 'extra'", "'min' must be a count", "max_age must be",
                     "'severity' must be warn or fail", "'values' must be a non-empty list"):
        assert expected in text
    assert checks_config_errors([]) == ["'checks' must be a non-empty list of checks"]
    assert parse_max_age("90s") == dt.timedelta(seconds=90) and parse_max_age("1w") == dt.timedelta(days=7)
    good = [{"name": "a", "type": "row_count", "min": 1}]
    assert config_errors({"sql": "select 1", "checks": good}) == []
    assert config_errors({"table": "ns.t", "catalog": "lakehouse", "checks": good}) == []
    assert "either 'table: namespace.name' or 'sql'" in config_errors({"checks": good})[0]
    assert config_errors({"table": "../x", "checks": good}) == [
        "'table' must be namespace.name (plain lower-case identifiers)"]
    assert "'connection' goes with 'sql'" in config_errors({"table": "a.b", "connection": "w", "checks": good})


# --- the phase kind, through real runs --------------------------------------------------------

pytestmark_db = pytest.mark.django_db


def trigger(world, phase_yaml: str, capture, *, access: str = "operator", workspace=None):
    from runs.services.jobs import job_create
    from runs.services.runs import run_create

    text = "name: checks\nphases:\n" + phase_yaml
    if workspace is None:
        job = job_create(access=world.access(access), spec_text=text)
        acting = world.access(access)
    else:
        from controlroom.access import Access
        from controlroom.models import Role

        acting = Access(workspace=workspace, role=Role.ADMIN, user=world.users["outsider"])
        job = job_create(access=acting, spec_text=text)
    with capture(execute=True):
        created = run_create(access=acting, job=job)
    created.refresh_from_db()
    return created


CHECKS_ON_QUERY = """\
  - name: quality
    kind: check
    config:
      sql: "SELECT * FROM (VALUES (1, 'a'), (2, NULL), (2, 'c')) t(id, label) WHERE id >= $min_id"
      checks:
        - {name: labels present, type: not_null, column: label, severity: warn}
        - {name: ids unique, type: unique, column: id, severity: SEVERITY}
        - {name: enough rows, type: row_count, min: 2}
"""
PARAM = "parameters:\n  min_id: {type: integer, default: 0}\n"


def query_spec(severity: str) -> str:
    return CHECKS_ON_QUERY.replace("SEVERITY", severity)


def trigger_with_params(world, phases: str, capture):
    from runs.services.jobs import job_create
    from runs.services.runs import run_create

    job = job_create(access=world.access("operator"), spec_text=f"name: checks\n{PARAM}phases:\n{phases}")
    with capture(execute=True):
        created = run_create(access=world.access("operator"), job=job)
    created.refresh_from_db()
    return created


@pytestmark_db
def test_warn_checks_log_store_failing_rows_and_succeed(world, eager_celery, django_capture_on_commit_callbacks):
    from artifacts.models import Artifact
    from artifacts.storage import get_store

    run = trigger_with_params(world, query_spec("warn"), django_capture_on_commit_callbacks)
    phase = run.phases.get()
    assert run.status == "succeeded", phase.error
    statuses = {c["name"]: (c["status"], c["failing"]) for c in phase.output["checks"]}
    assert statuses == {"labels present": ("warn", 1), "ids unique": ("warn", 2), "enough rows": ("pass", 0)}
    artifact = Artifact.objects.get(run=run)
    assert artifact.name == "failing_rows.parquet" and artifact.phase == phase
    with get_store().open(artifact.sha256) as stream:
        rows = pq.read_table(pa.BufferReader(stream.read())).to_pylist()
    assert sorted((r["failed_check"], r["id"]) for r in rows) == [
        ("ids unique", 2), ("ids unique", 2), ("labels present", 2)]
    logs = list(run.events.filter(type="PHASE_LOG").values_list("level", "message"))
    assert ("warning", "check labels present (not_null, warn) warn: 1 failing row(s)") in logs
    page = world.client("viewer").get(f"/w/acme/runs/{run.pk}/").content.decode()
    assert "failing_rows.parquet" in page and "check labels present" in page


@pytestmark_db
def test_a_failing_fail_check_fails_the_phase_naming_it(world, eager_celery, django_capture_on_commit_callbacks):
    from artifacts.models import Artifact

    run = trigger_with_params(world, query_spec("fail"), django_capture_on_commit_callbacks)
    phase = run.phases.get()
    assert run.status == "failed"
    assert phase.error == ("1 check(s) failed on the query's rows: ids unique "
                           "(and 1 warned: labels present)")
    assert Artifact.objects.filter(run=run, name="failing_rows.parquet").exists()  # kept for the failure


@pytestmark_db
def test_a_check_that_cannot_run_fails_clearly(world, eager_celery, django_capture_on_commit_callbacks):
    phases = ("  - name: q\n    kind: check\n    config:\n      sql: select 1 as x; select 2\n"
              "      checks: [{name: c, type: not_null, column: x}]\n"
              "  - name: r\n    kind: check\n    depends_on: []\n    config:\n      sql: select 1 as x\n"
              "      checks: [{name: c, type: not_null, column: y}]\n")
    run = trigger(world, phases, django_capture_on_commit_callbacks)
    errors = dict(run.phases.values_list("name", "error"))
    assert errors == {"q": "'sql' of a check phase must be one SELECT statement",
                      "r": "Check 'c' names the column 'y', which the table does not have."}


def _iceberg_table(workspace, rows: pa.Table, name: str = "orders"):
    """An Iceberg table in the workspace's embedded dev catalog, as a phase would have left it."""
    from lakehouse.catalogs import catalog_for

    environment = workspace.environments.get(name="dev")
    catalog = catalog_for(workspace, environment).iceberg()
    catalog.create_namespace_if_not_exists("shop")
    table = catalog.create_table_if_not_exists(f"shop.{name}", schema=rows.schema)
    table.append(rows)
    return table


@pytestmark_db
@pytest.mark.slow
def test_checks_on_a_lakehouse_table_record_a_read_edge(world, eager_celery, django_capture_on_commit_callbacks):
    from lakehouse.fingerprint import table_fingerprint
    from lakehouse.models import TableEdge

    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "amount": pa.array([5.0, -2.0, 7.0])})
    table = _iceberg_table(world.workspace, rows)
    phase = ("  - name: quality\n    kind: check\n    config:\n      table: shop.orders\n"
             "      checks: [{name: positive, type: range, column: amount, min: 0, severity: warn}]\n")
    run = trigger(world, phase, django_capture_on_commit_callbacks)
    assert run.status == "succeeded", run.phases.get().error
    output = run.phases.get().output
    snapshot = table.current_snapshot().snapshot_id
    assert output["subject"] == f"shop.orders (version {snapshot})"
    assert output["checks"][0]["failing"] == 1
    edge = TableEdge.objects.get(run=run)
    assert edge.direction == "read" and edge.table_version.version == snapshot
    assert edge.table_version.table.workspace == world.workspace
    assert edge.table_version.fingerprint == table_fingerprint(rows)


@pytestmark_db
@pytest.mark.slow
def test_a_hostile_tenant_cannot_check_another_workspaces_table(world, eager_celery,
                                                                 django_capture_on_commit_callbacks):
    from lakehouse.models import TableEdge

    _iceberg_table(world.workspace, pa.table({"secret": ["acme only"]}), name="secrets")
    phase = ("  - name: peek\n    kind: check\n    config:\n      table: shop.secrets\n"
             "      checks: [{name: p, type: sql, predicate: \"secret <> 'acme only'\"}]\n")
    run = trigger(world, phase, django_capture_on_commit_callbacks, workspace=world.other)
    assert run.status == "failed"
    assert run.phases.get().error == "input shop.secrets: catalog 'lakehouse' has no such table"
    assert not TableEdge.objects.filter(run=run).exists()
