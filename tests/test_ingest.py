"""`ingest` phases against a real PostgreSQL holding Odoo-shaped data (tests/odoo_source.py): a first
load in chunks and several commits, then exactly the changes, deletes as tombstones, schema drift
by policy, a failure half-way that the next run resumes without a duplicate, and clear errors."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.compute as pc
import pytest
from django.utils import timezone

from demo.odoo.generate import odoo_mutate
from lakehouse.ingest import bronze
from lakehouse.models import TableVersion
from lakehouse.phases import ingest as ingest_kind
from runs import tasks
from runs.models import Phase, PhaseState, RunStatus
from runs.services.jobs import job_create
from runs.services.phases import phases_reap
from runs.spec import SpecError
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger
from tests.odoo_source import OdooSource

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.once]

TABLES = ["res_partner", "sale_order", "sale_order_line", "account_move", "account_move_line"]


def ingest(**config):
    return spec(phase("bronze", "ingest", **{"source": "odoo", "namespace": "bronze", "tables": TABLES,
                                             "settle_s": 0, "reconcile_every_s": 0, **config}))


def run_ingest(world, capture, **config):
    run = trigger(world, ingest(**config), capture)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    return run


def bronze_rows(world, table: str):
    return table_rows(lake_of(world), "iceberg", f"bronze.{table}")


def ids_of(data, run_id: int | None = None, *, deleted: bool = False) -> list[int]:
    mask = pc.equal(data.column(bronze.DELETED), deleted)
    if run_id is not None:
        mask = pc.and_(mask, pc.equal(data.column(bronze.RUN), run_id))
    return sorted(data.filter(mask).column("id").to_pylist())


def source_ids(source: OdooSource, table: str) -> list[int]:
    return [r[0] for r in source.rows(f"SELECT id FROM {table} ORDER BY id")]


def test_first_load_copies_every_row_in_chunks_and_several_commits(world, eager_celery, odoo_source,
                                                                   django_capture_on_commit_callbacks):
    odoo_source.connection(world.workspace)
    run = run_ingest(world, django_capture_on_commit_callbacks, chunk_rows=100, commit_rows=300)
    for table in TABLES:
        data = bronze_rows(world, table)
        assert ids_of(data) == source_ids(odoo_source, table), table  # every row once, no tombstone
    lines = odoo_source.scalar("SELECT count(*) FROM account_move_line")
    versions = TableVersion.objects.filter(table__name="account_move_line").order_by("committed_at", "pk")
    assert len(versions) == -(-lines // 300)  # one commit per 300 rows: a kill loses at most one
    assert versions.last().row_count == lines
    # The watermark of the last commit is the last row in (write_date, id) order; the bound is recorded.
    tbl = lake_of(world).iceberg().load_table(("bronze", "account_move_line"))
    state = bronze.ingest_state(tbl)
    assert state.after == odoo_source.rows("SELECT write_date, id FROM account_move_line "
                                           "ORDER BY write_date DESC, id DESC LIMIT 1")[0]
    assert versions.last().source_as_of is not None
    assert abs((timezone.now() - versions.last().source_as_of).total_seconds()) < 60
    # Odoo's types: unconstrained numeric as decimal(38, 10), exact; jsonb would be text.
    data = bronze_rows(world, "account_move")
    assert str(data.schema.field("amount_residual").type) == "decimal128(38, 10)"
    total = odoo_source.scalar("SELECT sum(amount_residual) FROM account_move")
    assert pc.sum(data.column("amount_residual")).as_py() == total
    out = run.phases.get().output["tables"]
    assert [t["table"] for t in out] == [f"bronze.{t}" for t in TABLES]
    assert sum(t["rows_written"] for t in out) == sum(len(source_ids(odoo_source, t)) for t in TABLES)


def test_next_run_picks_up_exactly_the_changes_and_the_deletes(world, eager_celery, odoo_source,
                                                               django_capture_on_commit_callbacks):
    odoo_source.connection(world.workspace)
    capture = django_capture_on_commit_callbacks
    run_ingest(world, capture)
    with odoo_source.connect() as conn:
        changes = odoo_mutate(conn)
    second = run_ingest(world, capture)
    for table in TABLES:
        data = bronze_rows(world, table)
        expected = sorted(changes.updated.get(table, set()) | changes.inserted.get(table, set()))
        assert ids_of(data, second.pk) == expected, table
        assert ids_of(data, second.pk, deleted=True) == sorted(changes.deleted.get(table, set())), table
    assert changes.deleted["sale_order"] and changes.updated["account_move"] and changes.inserted["sale_order"]
    # A third run with nothing new writes nothing, and still moves freshness forward.
    before = TableVersion.objects.filter(table__name="sale_order").latest("committed_at", "pk")
    third = run_ingest(world, capture)
    assert TableVersion.objects.filter(run=third).count() == 0
    assert all(t["rows_written"] == 0 and t["rows_deleted"] == 0 for t in third.phases.get().output["tables"])
    after = TableVersion.objects.get(pk=before.pk)
    assert after.source_as_of > before.source_as_of


def test_a_run_that_fails_half_way_is_resumed_without_duplicates(world, eager_celery, odoo_source,
                                                                 django_capture_on_commit_callbacks):
    odoo_source.connection(world.workspace)
    capture = django_capture_on_commit_callbacks
    # A 10^40 amount cannot be held exactly: the run fails on it, after committing the chunks before it.
    bad = odoo_source.scalar("SELECT id FROM account_move ORDER BY write_date DESC, id DESC LIMIT 1")
    with odoo_source.connect() as conn:
        conn.execute("UPDATE account_move SET amount_residual = 1e40 WHERE id = %s", (bad,))
    failed = trigger(world, ingest(tables=["account_move"], chunk_rows=50, commit_rows=50), capture)
    assert failed.status == RunStatus.FAILED
    assert "account_move.amount_residual" in failed.error and "decimal" in failed.error
    partial = bronze_rows(world, "account_move").num_rows
    assert 0 < partial < len(source_ids(odoo_source, "account_move"))
    with odoo_source.connect() as conn:
        conn.execute("UPDATE account_move SET amount_residual = 0 WHERE id = %s", (bad,))
    run_ingest(world, capture, tables=["account_move"], chunk_rows=50, commit_rows=50)
    data = bronze_rows(world, "account_move")
    assert ids_of(data) == source_ids(odoo_source, "account_move")  # each row once: resumed at the watermark


def test_a_worker_that_lost_its_lease_commits_nothing_more_and_the_retry_resumes(
        world, eager_celery, odoo_source, monkeypatch, django_capture_on_commit_callbacks):
    """Attempt 1 commits its first 50 rows, then its lease lapses (a worker stalled past its lease):
    its next commit is refused. The reaper requeues; attempt 2 starts after attempt 1's last commit."""
    odoo_source.connection(world.workspace)
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    real = ingest_kind._commit

    def commit_then_stall(ctx, *args, **kwargs):
        done = real(ctx, *args, **kwargs)
        if ctx.phase.attempt == 1:
            Phase.objects.filter(pk=ctx.phase.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        return done

    monkeypatch.setattr(ingest_kind, "_commit", commit_then_stall)
    capture = django_capture_on_commit_callbacks
    run = trigger(world, spec(phase("bronze", "ingest", retries=2, source="odoo", namespace="bronze",
                                    tables=["account_move"], chunk_rows=50, commit_rows=50, settle_s=0)), capture)
    the_phase = run.phases.get()
    assert the_phase.state == PhaseState.RUNNING  # stood down at its second commit, nothing written
    assert bronze_rows(world, "account_move").num_rows == 50
    assert TableVersion.objects.count() == 1
    assert phases_reap() == [run.pk]
    with capture(execute=True):
        tasks.phase_execute.apply((the_phase.pk,))
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    data = bronze_rows(world, "account_move")
    assert ids_of(data) == source_ids(odoo_source, "account_move")  # every row exactly once
    assert set(TableVersion.objects.values_list("attempt", flat=True)) == {1, 2}


def test_a_stopped_phase_writes_nothing_after_the_stop(world, eager_celery, odoo_source, monkeypatch,
                                                       django_capture_on_commit_callbacks):
    """Cancel (or a timeout) arrives while chunks are read: the rows read since the last commit
    are dropped, and the bronze table keeps only whole commits."""
    odoo_source.connection(world.workspace)
    from runs.executors.context import PhaseContext

    real = PhaseContext.progress
    calls = []

    def stop_at_the_second_chunk(self, message, **payload):
        calls.append(message)
        if len(calls) == 2:
            self.stop()  # what the heartbeat thread calls on cancel, timeout or a lost lease
        return real(self, message, **payload)

    monkeypatch.setattr(PhaseContext, "progress", stop_at_the_second_chunk)
    run = trigger(world, ingest(tables=["account_move"], chunk_rows=40, commit_rows=40),
                  django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and "stopped" in run.error
    assert bronze_rows(world, "account_move").num_rows == 40  # the first commit only


def test_schema_drift_is_added_or_refused_by_policy(world, eager_celery, odoo_source,
                                                    django_capture_on_commit_callbacks):
    odoo_source.connection(world.workspace)
    capture = django_capture_on_commit_callbacks
    run_ingest(world, capture, tables=["res_partner"])
    with odoo_source.connect() as conn:
        conn.execute("ALTER TABLE res_partner ADD COLUMN vat varchar, ADD COLUMN credit_limit numeric(12, 2)")
        conn.execute("UPDATE res_partner SET vat = 'FR' || id, credit_limit = 1000.50, "
                     "write_date = now() AT TIME ZONE 'UTC' WHERE id <= 3")
    refused = trigger(world, ingest(tables=["res_partner"], schema_drift="fail"), capture)
    assert refused.status == RunStatus.FAILED
    assert "new column(s) vat (string), credit_limit (decimal128(12, 2))" in refused.error
    added = run_ingest(world, capture, tables=["res_partner"])
    assert added.phases.get().output["tables"][0]["columns_added"] == [
        "vat (string)", "credit_limit (decimal128(12, 2))"]
    data = bronze_rows(world, "res_partner")
    changed = data.filter(pc.equal(data.column(bronze.RUN), added.pk))
    assert sorted(changed.column("vat").to_pylist()) == ["FR1", "FR2", "FR3"]
    assert str(data.schema.field("credit_limit").type) == "decimal128(12, 2)"


def test_bad_configs_and_sources_give_clear_errors(world, eager_celery, odoo_source,
                                                   django_capture_on_commit_callbacks):
    access = world.access("operator")
    with pytest.raises(SpecError) as caught:
        job_create(access=access, spec_text=spec(phase("b", "ingest", namespace="Bronze!", tables=[
            "res_partner", {"table": "sale_order", "columns": ["name"]}, {"table": "x", "watermark": 3}],
            schema_drift="merge", chunk_rows=10**40)))
    text = str(caught.value)
    for expected in ("need 'source'", "'namespace'", "tables[1]: 'columns' must include the watermark",
                     "tables[2]: 'watermark' must be", "'schema_drift' must be add or fail",
                     "'chunk_rows' must be a number"):
        assert expected in text, expected
    capture = django_capture_on_commit_callbacks
    missing = trigger(world, ingest(tables=["res_partner"]), capture)
    assert "odoo" in missing.error  # no such connection
    odoo_source.connection(world.workspace)
    unknown = trigger(world, ingest(tables=["res_partners"]), capture)
    assert "the source has no table public.res_partners" in unknown.error
    odoo_source.connection(world.workspace, name="down", port=1)
    down = trigger(world, ingest(source="down", tables=["res_partner"]), capture)
    assert down.status == RunStatus.FAILED and "cannot reach the source 'down' at" in down.error and ":1" in down.error


def test_the_connection_test_button_asks_the_real_source(world, odoo_source):
    from connections.probe import connection_test

    good = odoo_source.connection(world.workspace)
    result = connection_test(access=world.access("admin"), connection=good)
    assert result.ok, result.message
    assert "PostgreSQL" in result.message and "8 table(s)" in result.message
    down = odoo_source.connection(world.workspace, name="down", port=1)
    result = connection_test(access=world.access("admin"), connection=down)
    assert not result.ok and "cannot reach the source 'down' at" in result.message


def test_a_postgres_connection_needs_its_address():
    from django.core.exceptions import ValidationError

    from connections.models import Connection

    conn = Connection(workspace=None, name="odoo", kind=Connection.Kind.POSTGRES,
                      config={"host": "db", "port": 10**40, "sslmode": "maybe", "extra": 1})
    with pytest.raises(ValidationError) as caught:
        conn.clean()
    text = str(caught.value)
    for expected in ("unknown postgres config field 'extra'", "'database' is required", "'user' is required",
                     "'port' must be a whole number", "'sslmode' must be one of"):
        assert expected in text, expected


def test_openlineage_names_the_source_tables_as_inputs(world, eager_celery, odoo_source,
                                                       django_capture_on_commit_callbacks):
    """The phase's COMPLETE event reads postgres://host:port database.schema.table (OpenLineage's
    naming for PostgreSQL) and writes the bronze tables; the document passes the vendored schema."""
    from lineage.events import documents_for
    from runs.models import EventType, RunEvent
    from tests.test_openlineage import schema_errors

    odoo_source.connection(world.workspace)
    run = run_ingest(world, django_capture_on_commit_callbacks, tables=["res_partner", "sale_order"])
    event = RunEvent.objects.get(run=run, type=EventType.PHASE_SUCCEEDED)
    (document,) = [d for d in documents_for(event) if d["eventType"] == "COMPLETE"]
    assert schema_errors(document) == []
    namespace = f"postgres://{odoo_source.host}:{odoo_source.port}"
    database = odoo_source.database
    assert [(d["namespace"], d["name"]) for d in document["inputs"]] == [
        (namespace, f"{database}.public.res_partner"), (namespace, f"{database}.public.sale_order")]
    assert sorted(d["name"] for d in document["outputs"]) == ["bronze.res_partner", "bronze.sale_order"]
