"""Delta tables a phase commits become readable in Trino (``lakehouse.trino_publish``): the demo's
Delta gold table, written by delta-rs on SeaweedFS, is registered in the test Trino's ``delta``
catalog (a file metastore on the same S3) and read in the SQL editor. PostgreSQL pass only.

The Spark variant (``tests/test_spark_demo.py``) reads its Spark-written Delta gold the same way."""

from __future__ import annotations

import pytest
from django.test import TestCase

from controlroom.models import Environment
from runs.models import RunStatus
from tests.lakehouse_helpers import errors, lake_of
from tests.test_lakehouse_demo import (  # noqa: F401  (fixtures)
    _CLEAN,
    demo,
    from_csv,
    shared_catalog,
    trino_connection,
)

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
GOLD = ("gold", "daily_revenue")
DAILY = (f"SELECT order_date, count(*), sum(amount) FROM ({_CLEAN}) WHERE status = 'paid' "
         "GROUP BY order_date ORDER BY order_date")


def _unregister(trino_server) -> None:
    """Trino forgets the demo's Delta gold table (its files are the shared_catalog fixture's to drop)."""
    from trino.exceptions import TrinoUserError

    with trino_server.connect(user="cleaner") as conn:
        cursor = conn.cursor()
        try:
            cursor.execute(f"CALL delta.system.unregister_table(schema_name => '{GOLD[0]}', table_name => '{GOLD[1]}')")
            cursor.fetchall()
        except TrinoUserError as exc:
            if exc.error_name not in ("NOT_FOUND", "TABLE_NOT_FOUND", "SCHEMA_NOT_FOUND"):
                raise


@pytest.fixture
def trino_forgets_gold(trino_server):
    _unregister(trino_server)
    yield
    _unregister(trino_server)


def _trino_tables(trino_server) -> set[str]:
    with trino_server.connect(user="reader") as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT table_name FROM delta.information_schema.tables WHERE table_schema = 'gold'")
        return {row[0] for row in cursor.fetchall()}


def _trino_log(run) -> list[str]:
    return list(run.events.filter(type="PHASE_LOG", phase__name="gold_daily", message__startswith="Trino (")
                .order_by("seq").values_list("message", flat=True))


def _editor(demo, connection, sql: str):  # noqa: F811
    from sqlwarehouse.models import QueryExecution

    analyst = demo.client(demo.analyst)
    with TestCase.captureOnCommitCallbacks(execute=True):  # the editor queues the query; it runs here
        response = analyst.post("/w/demo/sql/", {"sql": sql, "connection": connection.pk, "run": "1"})
    assert response.status_code == 302, response.content.decode()[:2000]
    return QueryExecution.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))


def test_the_demo_delta_gold_is_registered_in_trino_and_read_in_the_sql_editor(
        demo, shared_catalog, trino_server, trino_forgets_gold, eager_celery, monkeypatch,  # noqa: F811
        django_capture_on_commit_callbacks):
    trino = trino_connection(demo, trino_server, monkeypatch)
    trino.config["delta_catalogs"] = {shared_catalog.name: "delta"}
    # Serving every environment, the connection takes writes from prod runs only, like a trino phase.
    trino.save()
    run = demo.run(django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert _trino_log(run) == ["Trino (trino): delta.gold.daily_revenue not registered, because connection "
                               "'trino' reaches every environment, so only prod runs write through it"]
    assert "daily_revenue" not in _trino_tables(trino_server)

    # Scoped to dev, it registers what the dev run wrote; the analyst reads it in the SQL editor.
    trino.environment = Environment.objects.get(workspace=demo.workspace, name="dev")
    trino.save()
    run = demo.run(django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert _trino_log(run) == ["Trino (trino): delta.gold.daily_revenue is registered: Trino reads it from now on"]
    execution = _editor(demo, trino, "SELECT order_date, orders, revenue FROM delta.gold.daily_revenue "
                                     "ORDER BY order_date")
    assert execution.status == "succeeded", execution.error
    expected = from_csv(DAILY)
    assert [[str(c) for c in row] for row in execution.rows] == [[str(c) for c in row] for row in expected]
    # The next commit finds it registered; Trino reads the newest version from the table's own log.
    again = demo.run(django_capture_on_commit_callbacks)
    assert again.status == RunStatus.SUCCEEDED, errors(again)
    assert _trino_log(again) == ["Trino (trino): delta.gold.daily_revenue is registered (already)"]
    count = _editor(demo, trino, "SELECT count(*) FROM delta.gold.daily_revenue")
    assert count.status == "succeeded" and [[int(c) for c in r] for r in count.rows] == [[len(expected)]]
    # The table page's "Open in SQL editor" reads the recorded version in Trino (time travel).
    from lakehouse.editor_sql import trino_sql, trino_target
    from lakehouse.models import TableVersion

    version = TableVersion.objects.filter(run=run, table__name="daily_revenue").get()
    connection_id, catalog = trino_target(version.table)
    assert (connection_id, catalog) == (trino.pk, "delta")
    travel = _editor(demo, trino, trino_sql(version.table, version, catalog))
    assert travel.status == "succeeded", travel.error
    assert travel.row_count == version.row_count == len(expected)


def test_a_name_trino_holds_for_another_folder_is_left_alone_and_trino_down_only_warns(
        demo, shared_catalog, trino_server, trino_forgets_gold, eager_celery, monkeypatch,  # noqa: F811
        django_capture_on_commit_callbacks):
    elsewhere = shared_catalog.config["delta_root"] + "/elsewhere/daily_revenue"
    trino = trino_connection(demo, trino_server, monkeypatch)
    trino.config["delta_catalogs"] = {shared_catalog.name: "delta"}
    trino.environment = Environment.objects.get(workspace=demo.workspace, name="dev")
    trino.save()
    _register_other(demo, trino_server, elsewhere)
    run = demo.run(django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    [line] = _trino_log(run)
    assert line.startswith("Trino (trino): delta.gold.daily_revenue not registered: Trino already has this name "
                           f"for another folder ({elsewhere})"), line

    # Trino unreachable: the phase still succeeds, with one warning line.
    trino.config["port"] = 9  # discard: nothing listens
    trino.save()
    run = demo.run(django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    [line] = _trino_log(run)
    assert line.startswith("Trino (trino): delta.gold.daily_revenue not registered: "), line


def _register_other(demo, trino_server, location: str) -> None:  # noqa: F811
    """Someone registered another Delta table (another folder) under the demo's gold name first."""
    import deltalake
    import pyarrow as pa

    lake = lake_of(demo, workspace=demo.workspace)
    deltalake.write_deltalake(location, pa.table({"x": [1]}), mode="overwrite",
                              storage_options=lake.delta_storage_options())
    with trino_server.connect(user="someone") as conn:
        cursor = conn.cursor()
        for sql in ("CREATE SCHEMA IF NOT EXISTS delta.gold",
                    f"CALL delta.system.register_table(schema_name => '{GOLD[0]}', table_name => '{GOLD[1]}', "
                    f"table_location => '{location}')"):
            cursor.execute(sql)
            cursor.fetchall()
