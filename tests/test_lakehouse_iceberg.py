"""`iceberg` phases on the embedded catalog: modes, partitions, schema evolution, lineage."""

from __future__ import annotations

import pytest

from lakehouse.models import Table, TableEdge, TableVersion
from runs.models import RunStatus
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # real phases through PyIceberg / delta-rs

ORDERS = ("SELECT * FROM (VALUES (1, 'FR', 10.5::DOUBLE), (2, 'DE', 20.0::DOUBLE), (3, 'FR', 7.25::DOUBLE)) "
          "t(id, country, amount)")


def test_append_creates_the_table_and_records_a_version(world, eager_celery, django_capture_on_commit_callbacks):
    run = trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    data = table_rows(lake_of(world), "iceberg", "sales.orders")
    assert data.column("id").to_pylist() == [1, 2, 3]
    version = TableVersion.objects.get()
    assert version.table.format == "iceberg" and version.table.workspace == world.workspace
    assert version.row_count == 3 and version.bytes > 0 and len(version.fingerprint) == 64
    assert version.run == run and version.attempt == 1 and version.operation == "append"
    assert [c["name"] for c in version.schema] == ["id", "country", "amount"]
    assert TableEdge.objects.filter(run=run, direction="write", table_version=version).count() == 1
    out = run.phases.get().output["tables"][0]
    assert out["table"] == "sales.orders" and out["version"] == version.version


def test_second_append_adds_a_version_with_its_own_fingerprint(world, eager_celery,
                                                               django_capture_on_commit_callbacks):
    job = spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS))
    first = trigger(world, job, django_capture_on_commit_callbacks)
    second = trigger(world, job, django_capture_on_commit_callbacks)
    assert second.status == RunStatus.SUCCEEDED, errors(second)
    v1, v2 = TableVersion.objects.order_by("committed_at", "pk")
    assert (v1.run, v2.run) == (first, second) and v2.row_count == 6
    assert v1.fingerprint != v2.fingerprint and Table.objects.count() == 1
    assert table_rows(lake_of(world), "iceberg", "sales.orders").num_rows == 6


def test_overwrite_with_a_filter_replaces_only_matching_rows(world, eager_celery,
                                                            django_capture_on_commit_callbacks):
    trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
            django_capture_on_commit_callbacks)
    run = trigger(world, spec(phase("fix", "iceberg", table="sales.orders", mode="overwrite",
                                    overwrite_filter="country = 'FR'",
                                    sql="SELECT 9 AS id, 'FR' AS country, 1.0::DOUBLE AS amount")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    data = table_rows(lake_of(world), "iceberg", "sales.orders")
    assert data.column("id").to_pylist() == [2, 9]
    assert TableVersion.objects.get(run=run).operation == "overwrite"


def test_upsert_on_keys_updates_and_inserts(world, eager_celery, django_capture_on_commit_callbacks):
    trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
            django_capture_on_commit_callbacks)
    run = trigger(world, spec(phase("up", "iceberg", table="sales.orders", mode="upsert", keys=["id"],
                                    sql="SELECT * FROM (VALUES (2, 'DE', 99.0::DOUBLE), (4, 'NL', 1.0::DOUBLE)) "
                                        "t(id, country, amount)")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    data = table_rows(lake_of(world), "iceberg", "sales.orders")
    assert list(zip(data.column("id").to_pylist(), data.column("amount").to_pylist(), strict=True)) == [
        (1, 10.5), (2, 99.0), (3, 7.25), (4, 1.0)]
    version = TableVersion.objects.get(run=run)
    assert version.operation == "upsert" and version.row_count == 4


def test_partition_spec_is_declared_when_the_table_is_created(world, eager_celery,
                                                              django_capture_on_commit_callbacks):
    sql = ("SELECT id, TIMESTAMP '2024-01-01 10:00:00' + INTERVAL (id) DAY AS ts, 'FR' AS country "
           "FROM range(5) r(id)")
    run = trigger(world, spec(phase("load", "iceberg", table="sales.events", sql=sql,
                                    partition_by=["day(ts)", "bucket[4](id)", "country"])),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    tbl = lake_of(world).iceberg().load_table("sales.events")
    assert [(f.name, str(f.transform)) for f in tbl.spec().fields] == [
        ("ts_day", "day"), ("id_bucket4", "bucket[4]"), ("country", "identity")]
    assert len(tbl.inspect.files()) == 5  # one file per day partition
    # Created with its first snapshot in one commit: one metadata file, never an empty table.
    assert len(tbl.snapshots()) == 1 and tbl.metadata.metadata_log == []


def test_a_transform_that_does_not_fit_its_column_creates_nothing(world, eager_celery,
                                                                  django_capture_on_commit_callbacks):
    bad = phase("load", "iceberg", table="sales.orders", sql=ORDERS, partition_by=["day(country)"])
    run = trigger(world, spec(bad), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert "cannot create sales.orders with partition_by" in errors(run)[0]
    assert "sales.orders" not in [".".join(t) for t in lake_of(world).iceberg().list_tables("sales")]


def test_a_source_with_other_columns_is_refused_naming_them(world, eager_celery, django_capture_on_commit_callbacks):
    trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
            django_capture_on_commit_callbacks)
    run = trigger(world, spec(phase("load", "iceberg", table="sales.orders",
                                    sql="SELECT 'x' AS id, 'FR' AS country, 1 AS qty")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    message = errors(run)[0]
    assert "added: qty (int32)" in message and "missing: amount" in message
    assert "retyped: id (int32 → string)" in message and "schema_evolution: true" in message
    assert TableVersion.objects.count() == 1 and table_rows(lake_of(world), "iceberg", "sales.orders").num_rows == 3


def test_schema_evolution_adds_columns_in_the_same_commit(world, eager_celery, django_capture_on_commit_callbacks):
    trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
            django_capture_on_commit_callbacks)
    run = trigger(world, spec(phase("load", "iceberg", table="sales.orders", schema_evolution=True,
                                    sql="SELECT 5::INTEGER AS id, 'NL' AS country, 3 AS qty")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    version = TableVersion.objects.get(run=run)
    assert [c["name"] for c in version.schema] == ["id", "country", "amount", "qty"]
    data = table_rows(lake_of(world), "iceberg", "sales.orders")
    assert data.num_rows == 4 and data.column("qty").to_pylist() == [None, None, None, 3]
    assert data.column("amount").to_pylist()[3] is None


def test_a_datasets_file_is_a_source(world, eager_celery, django_capture_on_commit_callbacks):
    run = trigger(world, spec(phase("load", "iceberg", table="bronze.orders", file="orders.csv")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert TableVersion.objects.get().row_count == 245


def test_a_file_outside_the_datasets_cannot_be_read(world, eager_celery, django_capture_on_commit_callbacks,
                                                    settings):
    secret = settings.DATASETS_DIR.parent / "outside.csv"
    secret.write_text("a\n1\n")
    run = trigger(world, spec(phase("load", "iceberg", table="bronze.x", sql=f"SELECT * FROM read_csv('{secret}')")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and TableVersion.objects.count() == 0


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT 1 AS id, 10000000000000000000000000000000000000000 AS big", "integers wider than 128 bits"),
    ("SELECT 1 AS id, 18446744073709551615::UBIGINT AS big", "integers above 2^63-1"),
    ("SELECT 1 AS id, INTERVAL 1 DAY AS span", "store the interval as a number"),
    ("SELECT NULL AS nothing", "holds only NULLs"),
])
def test_values_no_table_can_hold_fail_clearly(world, eager_celery, django_capture_on_commit_callbacks, sql, expected):
    run = trigger(world, spec(phase("load", "iceberg", table="sales.big", sql=sql)), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and expected in errors(run)[0], errors(run)
    assert "internal error" not in errors(run)[0] and TableVersion.objects.count() == 0


def test_inputs_are_readable_by_name_and_recorded_as_read_lineage(world, eager_celery,
                                                                  django_capture_on_commit_callbacks):
    first = trigger(world, spec(phase("load", "iceberg", table="bronze.orders", sql=ORDERS)),
                    django_capture_on_commit_callbacks)
    run = trigger(world, spec(phase("agg", "iceberg", table="gold.by_country", inputs=["bronze.orders"],
                                    sql="SELECT country, sum(amount) AS total FROM orders GROUP BY country")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    read = TableEdge.objects.get(run=run, direction="read")
    assert read.table_version == TableVersion.objects.get(run=first)
    data = table_rows(lake_of(world), "iceberg", "gold.by_country")
    totals = dict(zip(data.column("country").to_pylist(), data.column("total").to_pylist(), strict=True))
    assert totals == {"DE": 20.0, "FR": 17.75}


def test_parameters_are_bound_not_pasted(world, eager_celery, django_capture_on_commit_callbacks):
    text = spec(phase("load", "iceberg", table="sales.p", sql="SELECT $country AS country"))
    text = text.replace("phases:", "parameters:\n  country:\n    type: string\n    default: x\nphases:")
    run = trigger(world, text, django_capture_on_commit_callbacks, parameters={"country": "'); DROP TABLE x; --"})
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert table_rows(lake_of(world), "iceberg", "sales.p").column("country").to_pylist() == ["'); DROP TABLE x; --"]


def test_a_timeout_interrupts_the_source_query_and_commits_nothing(world, eager_celery,
                                                                   django_capture_on_commit_callbacks):
    slow = phase("slow", "iceberg", table="sales.slow", timeout=1,
                 sql="SELECT count(*) AS n FROM range(100000000000) a")
    run = trigger(world, spec(slow), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and errors(run) == ["timed out after 1 s"]
    assert TableVersion.objects.count() == 0 and lake_of(world).iceberg().list_namespaces() == []


@pytest.mark.parametrize(("config", "expected"), [
    ({"table": "a.b", "sql": "select 1", "mode": "merge"}, "'mode' must be one of append, overwrite, upsert"),
    ({"table": "a.b", "sql": "select 1", "mode": "upsert"}, "upsert needs 'keys'"),
    ({"table": "a.b", "sql": "select 1", "keys": ["id"]}, "'keys' are for mode: upsert"),
    ({"table": "a.b", "sql": "select 1", "mode": "overwrite", "overwrite_filter": "a ==== 1"}, "not a valid filter"),
    ({"table": "a.b", "sql": "select 1", "overwrite_filter": "a = 1"}, "'overwrite_filter' is for mode: overwrite"),
    ({"table": "a.b", "sql": "select 1", "partition_by": ["bucket(id)"]}, "'partition_by' must list"),
    ({"table": "a.b", "sql": "select 1", "partition_by": ["day(id"]}, "'partition_by' must list"),
    ({"table": "A.b", "sql": "select 1"}, "need 'table: namespace.name'"),
    ({"table": "a.b.c", "sql": "select 1"}, "need 'table: namespace.name'"),
    ({"table": "a.b", "sql": "select 1", "file": "x.csv"}, "give exactly one source"),
    ({"table": "a.b", "file": "../other/x.csv"}, "'file' must be a .csv or .parquet path"),
    ({"table": "a.b", "file": "x.json"}, "'file' must be a .csv or .parquet path"),
    ({"table": "a.b", "sql": "select 1", "inputs": ["x.t", "y.t"]}, "two 'inputs' share a table name"),
    ({"table": "a.b", "sql": "select 1", "catalog": "../x"}, "'catalog' must be a connection's name"),
    ({"table": "a.b", "sql": "select 1", "schema_evolution": "yes"}, "'schema_evolution' must be true or false"),
    ({"table": "a.b", "sql": "select 1", "action": "optimize"}, "unknown iceberg config field 'action'"),
])
def test_config_errors(config, expected):
    from lakehouse.phases import iceberg

    found = iceberg.config_errors(config)
    assert any(expected in e for e in found), found


def test_good_configs_pass():
    from lakehouse.phases import iceberg

    assert iceberg.config_errors({"table": "a.b", "file": "datasets://sub/x.parquet", "mode": "upsert",
                                  "keys": ["id"], "partition_by": ["id", "identity(c)", "month(ts)",
                                                                   "bucket[16](id)", "truncate[4](c)"],
                                  "schema_evolution": True, "catalog": "lakehouse"}) == []
