"""Fingerprints computed after the commit: the task fills a version the phase recorded without
one, the sweep fills one whose message was lost, and both leave a filled one alone."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from lakehouse import tasks
from lakehouse.fingerprint import table_fingerprint
from lakehouse.models import TableVersion
from lakehouse.services import table_versions_unfingerprinted
from runs.models import RunStatus
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # real phases through PyIceberg / delta-rs

ORDERS = ("SELECT * FROM (VALUES (1, 'FR', 10.5::DOUBLE), (2, 'DE', 20.0::DOUBLE), (3, 'FR', 7.25::DOUBLE)) "
          "t(id, country, amount)")


@pytest.fixture
def lost_messages(monkeypatch) -> list[int]:
    """The fingerprint task's messages are lost: the ids they carried are collected instead."""
    lost: list[int] = []
    monkeypatch.setattr(tasks.table_version_fingerprint, "delay", lambda version_id: lost.append(version_id))
    return lost


@pytest.mark.parametrize("fmt", ["iceberg", "delta"])
def test_the_phase_records_no_fingerprint_and_the_task_fills_it_from_that_version(
        world, fmt, lost_messages, eager_celery, django_capture_on_commit_callbacks):
    first = trigger(world, spec(phase("load", fmt, table="sales.orders", sql=ORDERS)),
                    django_capture_on_commit_callbacks)
    second = trigger(world, spec(phase("more", fmt, table="sales.orders", sql=ORDERS)),
                     django_capture_on_commit_callbacks)
    assert first.status == second.status == RunStatus.SUCCEEDED, errors(first) + errors(second)
    v1, v2 = TableVersion.objects.order_by("committed_at", "pk")
    # The phase recorded both versions fully but for the fingerprint, and asked for it on commit.
    assert v1.row_count == 3 and v2.row_count == 6 and v1.fingerprint == v2.fingerprint == ""
    assert v1.fingerprint_pending and lost_messages == [v1.pk, v2.pk]
    for version_id in lost_messages:
        tasks.table_version_fingerprint(version_id)
    v1.refresh_from_db()
    v2.refresh_from_db()
    lake = lake_of(world)
    assert v1.fingerprint == table_fingerprint(table_rows(lake, fmt, "sales.orders", version=v1.version))
    assert v2.fingerprint == table_fingerprint(table_rows(lake, fmt, "sales.orders"))
    assert v1.fingerprint != v2.fingerprint and not v1.fingerprint_pending
    # Idempotent: a second run (the sweep's copy of a message) keeps the stored value.
    tasks.table_version_fingerprint(v2.pk)
    assert TableVersion.objects.get(pk=v2.pk).fingerprint == v2.fingerprint


def test_a_run_with_workers_sees_the_fingerprint_filled(world, eager_celery, django_capture_on_commit_callbacks):
    run = trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    version = TableVersion.objects.get()
    assert version.fingerprint == table_fingerprint(table_rows(lake_of(world), "iceberg", "sales.orders"))


def test_the_sweep_fills_a_version_whose_message_was_lost(world, lost_messages, eager_celery,
                                                          django_capture_on_commit_callbacks):
    job = spec(phase("load", "delta", table="sales.orders", sql=ORDERS))
    trigger(world, job, django_capture_on_commit_callbacks)
    run = trigger(world, job, django_capture_on_commit_callbacks)
    optimize = trigger(world, spec(phase("compact", "delta", table="sales.orders", action="optimize")),
                       django_capture_on_commit_callbacks)
    assert run.status == optimize.status == RunStatus.SUCCEEDED, errors(run) + errors(optimize)
    written = TableVersion.objects.get(run=run)
    compacted = TableVersion.objects.get(run=optimize)
    assert lost_messages[1:] == [written.pk] and written.fingerprint == "" and compacted.fingerprint == ""
    tasks.table_version_fingerprint(lost_messages[0])  # the earlier version's message did arrive
    # A version younger than a minute still has its own message coming: the sweep leaves it.
    assert table_versions_unfingerprinted() == []
    TableVersion.objects.update(committed_at=dt.datetime.now(tz=dt.UTC) - dt.timedelta(minutes=2))
    # Maintenance versions need no fingerprint: only the written one is swept.
    assert table_versions_unfingerprinted() == [written.pk]
    lost_messages.clear()
    tasks.table_versions_fingerprint_sweep()
    assert lost_messages == [written.pk]  # the sweep enqueues the task (lost again here): run it
    tasks.table_version_fingerprint(written.pk)
    written.refresh_from_db()
    assert written.fingerprint == table_fingerprint(table_rows(lake_of(world), "delta", "sales.orders",
                                                               version=written.version))
    assert table_versions_unfingerprinted() == [] and TableVersion.objects.get(run=optimize).fingerprint == ""


def test_the_sweep_is_bounded_per_tick(world):
    from lakehouse.models import Table

    env = world.workspace.environments.get(name="dev")
    table = Table.objects.create(workspace=world.workspace, environment=env, namespace="shop", name="t",
                                 format="iceberg")
    old = dt.datetime.now(tz=dt.UTC) - dt.timedelta(hours=1)
    TableVersion.objects.bulk_create([TableVersion(table=table, version=n, operation="append", committed_at=old)
                                      for n in range(30)])
    picked = table_versions_unfingerprinted(limit=20)
    assert len(picked) == len(set(picked)) == 20


def test_a_fingerprint_the_catalog_cannot_give_stays_pending(world, lost_messages, eager_celery,
                                                            django_capture_on_commit_callbacks, caplog):
    run = trigger(world, spec(phase("load", "iceberg", table="sales.orders", sql=ORDERS)),
                  django_capture_on_commit_callbacks)
    version = TableVersion.objects.get(run=run)
    TableVersion.objects.filter(pk=version.pk).update(version=12345)  # a snapshot the catalog never had
    tasks.table_version_fingerprint(version.pk)
    assert TableVersion.objects.get(pk=version.pk).fingerprint_pending
    assert "cannot fingerprint table version" in caplog.text


def test_a_parquet_dataset_is_read_without_duckdb_with_the_same_errors(world, eager_celery, settings, monkeypatch,
                                                                        django_capture_on_commit_callbacks):
    import pyarrow.parquet as pq

    from sqlwarehouse.datasets import datasets_area
    from sqlwarehouse.engines.duckdb import DuckDBEngine

    def no_duckdb(self):
        raise AssertionError("a Parquet file source opened a DuckDB connection")

    monkeypatch.setattr(DuckDBEngine, "connect", no_duckdb)

    area = datasets_area(world.workspace)
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int16()), "label": pa.array(["a", None, "c"]).dictionary_encode()})
    pq.write_table(rows, area / "small.parquet")
    outside = settings.DATASETS_DIR.parent / "secret.parquet"
    pq.write_table(rows, outside)
    (area / "link.parquet").symlink_to(outside)
    run = trigger(world, spec(phase("load", "iceberg", table="bronze.small", file="small.parquet")),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    data = table_rows(lake_of(world), "iceberg", "bronze.small")
    assert data.column("id").to_pylist() == [1, 2, 3] and data.column("label").to_pylist() == ["a", None, "c"]
    assert data.schema.field("id").type == pa.int32()  # normalised like DuckDB's result
    for name in ("missing.parquet", "link.parquet"):
        failed = trigger(world, spec(phase("load", "iceberg", table="bronze.other", file=name)),
                         django_capture_on_commit_callbacks)
        assert failed.status == RunStatus.FAILED
        assert errors(failed) == [f'source error: IO Error: No files found that match the pattern "datasets:///{name}"']
    assert TableVersion.objects.count() == 1
