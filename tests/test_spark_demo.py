"""The lakehouse demo on Spark (``demo/jobs/lakehouse-spark.yaml``): bronze by an iceberg phase, silver
by a Spark MERGE into Iceberg, gold by a Spark job writing Delta, then checks; on a real standalone
cluster against SeaweedFS and the shared JDBC catalog, read back by Trino in the SQL editor, and once
through a real Spark Connect server. PostgreSQL pass only (the servers are up there)."""

from __future__ import annotations

import pytest
from django.test import TestCase

from connections.models import Connection
from controlroom.models import Environment
from lakehouse.spark.conf import session_conf
from runs.models import Job, PhaseState, RunStatus
from tests.lakehouse_helpers import errors, lake_of, table_rows
from tests.spark_cluster import start_connect_server
from tests.test_lakehouse_demo import (  # noqa: F401  (fixtures)
    _CLEAN,
    Demo,
    demo,
    from_csv,
    phase_states,
    shared_catalog,
    trino_connection,
    versions_of,
)

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]
PHASES = ["bronze", "silver", "gold", "check_silver"]
TABLES = {"bronze.orders_spark": "iceberg", "silver.orders_spark": "iceberg", "gold.daily_revenue_spark": "delta"}
DAILY = (f"SELECT order_date, count(*), sum(amount) FROM ({_CLEAN}) WHERE status = 'paid' "
         "GROUP BY order_date ORDER BY order_date")


@pytest.fixture
def spark_demo(demo, shared_catalog, s3_server):  # noqa: F811
    """The demo's lakehouse-spark job with its Spark tables dropped before and after."""
    _drop(demo, s3_server)
    yield Job.objects.get(workspace=demo.workspace, slug="lakehouse-spark")
    _drop(demo, s3_server)


def _drop(seeded: Demo, s3_server) -> None:
    from pyiceberg.exceptions import NoSuchTableError

    lake = lake_of(seeded, workspace=seeded.workspace)
    for name, fmt in TABLES.items():
        if fmt == "iceberg":
            try:
                lake.iceberg().purge_table(name)
            except NoSuchTableError:
                pass
            continue
        bucket, prefix = lake.delta_uri(*name.split("."))[len("s3://"):].split("/", 1)
        client = s3_server.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=bucket, Key=item["Key"])


def run_demo(seeded: Demo, job: Job, capture):
    from runs.services.runs import run_create

    with capture(execute=True):
        run = run_create(access=seeded.access, job=job, environment="dev")
    run.refresh_from_db()
    return run


def assert_demo_tables(seeded: Demo, run) -> None:
    lines = list(run.events.filter(type="PHASE_LOG").order_by("seq").values_list("message", flat=True))
    assert run.status == RunStatus.SUCCEEDED, (errors(run), lines[-60:])
    assert phase_states(run) == dict.fromkeys(PHASES, PhaseState.SUCCEEDED)
    written = versions_of(run)
    assert {name: v.row_count for name, v in written.items()} == {
        "bronze.orders_spark": 245, "silver.orders_spark": 240, "gold.daily_revenue_spark": 30}
    lake = lake_of(seeded, workspace=seeded.workspace)
    silver = table_rows(lake, "iceberg", "silver.orders_spark")
    assert len(set(silver.column("order_id").to_pylist())) == silver.num_rows == 240  # deduplicated
    gold = table_rows(lake, "delta", "gold.daily_revenue_spark")  # delta-rs reads what Spark wrote
    expected = from_csv(DAILY)
    assert [(r["order_date"], r["orders"], r["revenue"]) for r in gold.to_pylist()] == \
        [(d, n, amount) for d, n, amount in expected]


def test_the_spark_demo_runs_on_a_standalone_cluster_and_trino_reads_silver_and_gold(
        demo, spark_demo, shared_catalog, spark_cluster, trino_server, eager_celery, monkeypatch,  # noqa: F811
        django_capture_on_commit_callbacks):
    from sqlwarehouse.models import QueryExecution

    Connection.objects.filter(workspace=demo.workspace, name="spark").update(
        config={"master": spark_cluster.master_url, "ui_url": spark_cluster.ui_url})
    # The analysts' Trino, for dev, lists the lake's Delta tables in its catalog "delta".
    trino = trino_connection(demo, trino_server, monkeypatch)
    trino.config["delta_catalogs"] = {shared_catalog.name: "delta"}
    trino.environment = Environment.objects.get(workspace=demo.workspace, name="dev")
    trino.save()
    run = run_demo(demo, spark_demo, django_capture_on_commit_callbacks)
    assert_demo_tables(demo, run)
    assert run.events.filter(phase__name="gold", message__startswith="Trino (trino): delta.gold.daily_revenue_spark "
                                                                     "is registered").exists()
    apps = [run.phases.get(name=name).output["spark"]["application"] for name in ("silver", "gold")]
    assert all(spark_cluster.app(app)["state"] == "FINISHED" for app in apps)
    # A second run over the same bronze rows: the MERGE changes nothing in silver.
    again = run_demo(demo, spark_demo, django_capture_on_commit_callbacks)
    assert again.status == RunStatus.SUCCEEDED, errors(again)
    lake = lake_of(demo, workspace=demo.workspace)
    assert table_rows(lake, "iceberg", "silver.orders_spark").num_rows == 240
    # An analyst reads silver (Iceberg) and gold (Delta) through Trino in the SQL editor: the same
    # catalog, the same S3, the tables Spark wrote.
    analyst = demo.client(demo.analyst)
    for sql, expected in (
            ("SELECT count(*), count(DISTINCT order_id) FROM iceberg.silver.orders_spark", [[240, 240]]),
            ("SELECT order_date, orders, revenue FROM delta.gold.daily_revenue_spark ORDER BY order_date",
             [[str(c) for c in row] for row in from_csv(DAILY)])):
        with TestCase.captureOnCommitCallbacks(execute=True):
            response = analyst.post("/w/demo/sql/", {"sql": sql, "connection": trino.pk, "run": "1"})
        execution = QueryExecution.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))
        assert execution.status == "succeeded", execution.error
        typed = int if expected == [[240, 240]] else str
        assert [[typed(c) for c in row] for row in execution.rows] == expected


def test_the_spark_demo_runs_through_spark_connect(demo, spark_demo, eager_celery,  # noqa: F811
                                                    django_capture_on_commit_callbacks):
    """The Connect server holds the settings a server must know at start (SQL extensions, the Delta
    session catalog, jars, redaction); each phase's session sets its catalog and S3 keys itself."""
    static, _per_session = session_conf(lake_of(demo, workspace=demo.workspace)).connect_settings()
    with start_connect_server(static) as server:
        Connection.objects.filter(workspace=demo.workspace, name="spark").update(config={"master": server.url})
        run = run_demo(demo, spark_demo, django_capture_on_commit_callbacks)
        assert_demo_tables(demo, run)
        assert "started on sc://" in run.events.get(payload__has_key="spark_app", phase__name="silver").message
