"""Exactly-once table commits, in-process: a retry adopts its earlier attempt's commit instead of
writing again; a stopped phase or a stale lease never commits nor records; a newer attempt's
commit makes an older attempt stand down. (Real workers killed with SIGKILL: test_lakehouse_chaos.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lakehouse.models import TableEdge, TableVersion
from lakehouse.phases import common
from runs import tasks
from runs.models import Phase, PhaseState, RunStatus
from runs.services.phases import phases_reap
from tests.lakehouse_helpers import errors, lake_of, phase, spec, table_rows, trigger

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # real phases through PyIceberg / delta-rs

ROWS = "SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) t(id, label)"
KINDS = {
    "iceberg": {"table": "lake.t", "sql": ROWS},
    "delta": {"table": "lake.t", "sql": ROWS},
}


def snapshots(world, fmt: str) -> int:
    lake = lake_of(world)
    if fmt == "iceberg":
        return len(lake.iceberg().load_table("lake.t").snapshots())
    from lakehouse.tables import delta_table

    return delta_table(lake, "lake", "t").version() + 1


def expire(phase_id: int) -> None:
    Phase.objects.filter(pk=phase_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)


@pytest.mark.parametrize("fmt", ["iceberg", "delta"])
def test_a_retry_after_a_lost_commit_adopts_it_and_writes_nothing_again(world, fmt, monkeypatch, no_backoff,
                                                                         eager_celery,
                                                                         django_capture_on_commit_callbacks):
    """The worker dies between the table commit and recording/complete (here: its lease lapses
    right after the commit). The reaper requeues; attempt 2 finds attempt 1's commit and adopts it."""
    real = common.after_commit
    monkeypatch.setattr(common, "after_commit", lambda ctx, table: (expire(ctx.phase.pk), real(ctx, table)))
    run = trigger(world, spec(phase("write", fmt, retries=2, **KINDS[fmt])), django_capture_on_commit_callbacks)
    the_phase = run.phases.get()
    assert the_phase.state == PhaseState.RUNNING and TableVersion.objects.count() == 0  # lost: nothing recorded
    assert phases_reap() == [run.pk]
    monkeypatch.setattr(common, "after_commit", real)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.phase_execute.apply((the_phase.pk,))
    run.refresh_from_db()
    the_phase.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert the_phase.attempt == 2 and the_phase.output["tables"][0]["adopted"] is True
    assert the_phase.output["tables"][0]["committed_by_attempt"] == 1
    assert table_rows(lake_of(world), fmt, "lake.t").column("id").to_pylist() == [1, 2, 3]
    assert snapshots(world, fmt) == 1
    version = TableVersion.objects.get()
    assert version.attempt == 1 and version.run == run and version.row_count == 3 and version.fingerprint
    assert TableEdge.objects.filter(run=run, direction="write").count() == 1


@pytest.mark.parametrize("fmt", ["iceberg", "delta"])
def test_a_phase_stopped_before_its_commit_writes_nothing(world, fmt, monkeypatch, eager_celery,
                                                         django_capture_on_commit_callbacks):
    real = common.read_source

    def read_then_cancelled(ctx, config, views=None):
        data = real(ctx, config, views)
        ctx.stop()  # a cancel (or timeout) arrives once the query is done, before the commit
        return data

    monkeypatch.setattr(common, "read_source", read_then_cancelled)
    run = trigger(world, spec(phase("write", fmt, **KINDS[fmt])), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and "nothing was written" in errors(run)[0]
    assert TableVersion.objects.count() == 0
    from lakehouse.tables import delta_table, iceberg_table

    # A new table is created with its first snapshot in one commit: the stopped phase left no
    # empty table behind either.
    find = iceberg_table if fmt == "iceberg" else delta_table
    assert find(lake_of(world), "lake", "t") is None


@pytest.mark.parametrize("fmt", ["iceberg", "delta"])
def test_a_stale_lease_neither_commits_nor_records(world, fmt, monkeypatch, eager_celery,
                                                   django_capture_on_commit_callbacks):
    real = common.commit_identity

    def lose_lease_then_identity(ctx):
        expire(ctx.phase.pk)  # a long GC pause right before the commit: the lease lapsed meanwhile
        return real(ctx)

    monkeypatch.setattr(common, "commit_identity", lose_lease_then_identity)
    run = trigger(world, spec(phase("write", fmt, **KINDS[fmt])), django_capture_on_commit_callbacks)
    assert run.phases.get().state == PhaseState.RUNNING  # its outcome is the reaper's to write
    assert TableVersion.objects.count() == 0 and TableEdge.objects.count() == 0
    from lakehouse.tables import delta_table, iceberg_table

    # A new table is created with its first snapshot in one commit: the stopped phase left no
    # empty table behind either.
    find = iceberg_table if fmt == "iceberg" else delta_table
    assert find(lake_of(world), "lake", "t") is None


def test_an_older_attempt_stands_down_when_a_newer_one_committed(world, monkeypatch,
                                                                 django_capture_on_commit_callbacks):
    import pyarrow as pa

    from runs.services.jobs import job_create
    from runs.services.leases import phase_claim
    from runs.services.runs import run_create

    job = job_create(access=world.access("operator"), spec_text=spec(phase("write", "iceberg", **KINDS["iceberg"])))
    with django_capture_on_commit_callbacks(execute=False):
        run = run_create(access=world.access("operator"), job=job)
    the_phase = run.phases.get()
    claimed, token = phase_claim(phase_id=the_phase.pk, worker="w")
    lake = lake_of(world)
    lake.iceberg().create_namespace_if_not_exists("lake")
    tbl = lake.iceberg().create_table("lake.t", schema=pa.schema([("id", pa.int32()), ("label", pa.string())]))
    tbl.append(pa.table({"id": pa.array([7], pa.int32()), "label": ["newer"]}),
               snapshot_properties={common.RUN_ID: str(run.pk), common.PHASE: "write", common.ATTEMPT: "2"})
    from runs.executors.context import PhaseContext
    from runs.services.fence import StaleLease

    ctx = PhaseContext(phase=claimed, lease_token=token)
    try:
        from lakehouse.phases import iceberg

        with pytest.raises(StaleLease, match="attempt 2 already committed"):
            iceberg.execute(ctx)
    finally:
        ctx.cleanup()
    assert len(lake.iceberg().load_table("lake.t").snapshots()) == 1 and TableVersion.objects.count() == 0


def test_delta_commit_race_between_two_attempts_keeps_one(world, monkeypatch, eager_celery,
                                                          django_capture_on_commit_callbacks):
    """Another attempt of the same phase commits between this one's check and its commit: Delta's
    conflict check refuses the second commit with the same app id, and this attempt adopts."""
    import pyarrow as pa
    from deltalake import CommitProperties, Transaction, write_deltalake

    from lakehouse.phases import delta

    real = delta._before_commit

    def racing(ctx):
        lake = lake_of(world)
        write_deltalake(lake.delta_uri("lake", "t"), pa.table({"id": pa.array([1, 2, 3], pa.int32()),
                                                                "label": ["a", "b", "c"]}), mode="append",
                        commit_properties=CommitProperties(
                            custom_metadata=common.commit_identity(ctx),
                            app_transactions=[Transaction(common.delta_app_id(ctx), ctx.phase.attempt)]))
        real(ctx)

    monkeypatch.setattr(delta, "_before_commit", racing)
    run = trigger(world, spec(phase("write", "delta", **KINDS["delta"])), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, errors(run)
    assert run.phases.get().output["tables"][0]["adopted"] is True
    assert table_rows(lake_of(world), "delta", "lake.t").num_rows == 3 and snapshots(world, "delta") == 1
