"""`delta` phases on the embedded Delta root: modes, merge on keys, optimize, vacuum, schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.models import TableVersion
from lakehouse.phases import delta
from lakehouse.tables import delta_table
from runs.models import RunStatus
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # real phases through PyIceberg / delta-rs

ROWS = ("SELECT * FROM (VALUES (1, 'FR', 10.5::DOUBLE), (2, 'DE', 20.0::DOUBLE), (3, 'FR', 7.25::DOUBLE)) "
        "t(id, country, amount)")


def run_delta(world, capture, **config):
    run = trigger(world, spec(phase("d", "delta", **config)), capture)
    return run


def test_append_creates_a_partitioned_table_and_records_it(world, eager_celery, django_capture_on_commit_callbacks):
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", sql=ROWS,
                    partition_by=["country"])
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    table = delta_table(lake_of(world), "sales", "orders")
    assert table.metadata().partition_columns == ["country"] and table.version() == 0
    version = TableVersion.objects.get()
    assert (version.table.format, version.version, version.row_count, version.operation) == ("delta", 0, 3, "append")
    assert version.table.location.endswith("/delta/sales/orders") and len(version.fingerprint) == 64
    assert table.transaction_version(f"controlroom-run-{run.pk}-phase-{run.phases.get().pk}") == 1
    run2 = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", sql=ROWS)
    assert run2.status == RunStatus.SUCCEEDED, errors(run2)
    assert TableVersion.objects.get(run=run2).version == 1 and table_rows(lake_of(world), "delta",
                                                                          "sales.orders").num_rows == 6


def test_overwrite_with_a_predicate_and_merge_on_keys(world, eager_celery, django_capture_on_commit_callbacks):
    run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", sql=ROWS)
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", mode="overwrite",
                    overwrite_filter="country = 'FR'", sql="SELECT 9 AS id, 'FR' AS country, 1.0::DOUBLE AS amount")
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert table_rows(lake_of(world), "delta", "sales.orders").column("id").to_pylist() == [2, 9]
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", mode="merge", keys=["id"],
                    sql="SELECT * FROM (VALUES (2, 'DE', 99.0::DOUBLE), (4, 'NL', 1.0::DOUBLE)) t(id, country, amount)")
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    data = table_rows(lake_of(world), "delta", "sales.orders")
    assert list(zip(data.column("id").to_pylist(), data.column("amount").to_pylist(), strict=True)) == [
        (2, 99.0), (4, 1.0), (9, 1.0)]
    assert TableVersion.objects.get(run=run).operation == "merge"


def test_optimize_and_vacuum_are_recorded_as_maintenance(world, eager_celery, django_capture_on_commit_callbacks):
    for _ in range(3):
        run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", sql=ROWS)
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", action="optimize")
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    table = delta_table(lake_of(world), "sales", "orders")
    assert len(table.file_uris()) == 1 and table_rows(lake_of(world), "delta", "sales.orders").num_rows == 9
    optimized = TableVersion.objects.get(run=run)
    assert optimized.operation == "optimize" and optimized.fingerprint == "" and optimized.row_count == 9
    folder = Path(lake_of(world).delta_uri("sales", "orders"))
    assert len(list(folder.glob("*.parquet"))) == 4
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", action="vacuum",
                    retention_hours=0)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert len(list(folder.glob("*.parquet"))) == 1 and TableVersion.objects.get(run=run).operation == "vacuum"
    assert table_rows(lake_of(world), "delta", "sales.orders").num_rows == 9


def test_maintenance_of_a_missing_table_fails_clearly(world, eager_celery, django_capture_on_commit_callbacks):
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.none", action="optimize")
    assert run.status == RunStatus.FAILED and "has no such Delta table" in errors(run)[0]


def test_schema_differences_are_refused_unless_evolution_is_on(world, eager_celery,
                                                              django_capture_on_commit_callbacks):
    run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", sql=ROWS)
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders",
                    sql="SELECT 4 AS id, 'NL' AS country, 1.0::DOUBLE AS amount, 'x' AS note")
    assert run.status == RunStatus.FAILED and "added: note (string)" in errors(run)[0]
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", schema_evolution=True,
                    sql="SELECT 4 AS id, 'NL' AS country, 1.0::DOUBLE AS amount, 'x' AS note")
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert [c["name"] for c in TableVersion.objects.get(run=run).schema] == ["id", "country", "amount", "note"]


def test_a_table_name_taken_by_the_other_format_is_refused(world, eager_celery, django_capture_on_commit_callbacks):
    trigger(world, spec(phase("i", "iceberg", table="sales.orders", sql=ROWS)), django_capture_on_commit_callbacks)
    run = run_delta(world, django_capture_on_commit_callbacks, table="sales.orders", sql=ROWS)
    assert run.status == RunStatus.FAILED and "is an Iceberg table" in errors(run)[0]


@pytest.mark.parametrize(("config", "expected"), [
    ({"table": "a.b", "sql": "select 1", "mode": "upsert"}, "'mode' must be one of append, overwrite, merge"),
    ({"table": "a.b", "sql": "select 1", "mode": "merge"}, "merge needs 'keys'"),
    ({"table": "a.b", "action": "optimize", "sql": "select 1"}, "'sql' has no use here"),
    ({"table": "a.b", "action": "vacuum", "retention_hours": -1}, "'retention_hours' must be"),
    ({"table": "a.b", "sql": "select 1", "partition_by": ["day(ts)"]}, "Delta has no partition transforms"),
    ({"table": "../etc", "sql": "select 1"}, "need 'table: namespace.name'"),
    ({"table": "a.b"}, "give exactly one source"),
    ({"table": "a.b", "sql": "select 1", "bogus": 1}, "unknown delta config field 'bogus'"),
])
def test_config_errors(config, expected):
    assert any(expected in e for e in delta.config_errors(config)), delta.config_errors(config)
