"""Writes to the table registry: versions committed by phases and lineage edges.

Every write runs under the phase's lease (``runs.services.fence.lease_fence``): a worker whose
lease expired or was taken over records nothing (StaleLease), exactly like its events and
artifacts. Recording is idempotent: a retry that adopts a version an earlier attempt committed
finds the row already there and only adds its own edge.

A version is recorded without its canonical fingerprint (sorting the whole table would cost the
phase more than its commit): once the record is committed, the task
``lakehouse.tasks.table_version_fingerprint`` computes it from the catalog at that exact version,
and a periodic sweep catches any version whose message was lost."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from lakehouse.models import MAINTENANCE, Table, TableEdge, TableVersion
from runs.models import Phase
from runs.services.fence import lease_fence


@dataclass
class Commit:
    """What one table commit (or one observed version) holds, ready to be recorded."""

    format: str  # Table.Format
    catalog_name: str  # the catalog connection's name
    namespace: str
    name: str
    location: str
    version: int
    operation: str  # TableVersion.Operation
    schema: list[dict[str, Any]] = field(default_factory=list)
    row_count: int = 0
    bytes: int = 0
    fingerprint: str = ""
    attempt: int = 0  # the attempt that made the version (0: not made by a phase)
    committed_at: dt.datetime | None = None
    source_as_of: dt.datetime | None = None  # freshness (TableVersion.source_as_of)


def _table(phase: Phase, commit: Commit) -> Table:
    run = phase.run
    table, created = Table.objects.get_or_create(
        workspace_id=run.workspace_id, environment_id=run.environment_id, catalog_name=commit.catalog_name,
        namespace=commit.namespace, name=commit.name,
        defaults={"format": commit.format, "location": commit.location},
    )
    if not created and commit.location and table.location != commit.location:
        table.location = commit.location
        table.save(update_fields=["location", "updated_at"])
    return table


def table_version_record(*, phase_id: int, lease_token: str, commit: Commit, made_here: bool = True) -> TableVersion:
    """Record ``commit`` and a write edge for this phase, under its live lease (StaleLease
    otherwise). ``made_here`` False records a version this phase only read (a read edge)."""
    with lease_fence(phase_id=phase_id, lease_token=lease_token) as phase:
        table = _table(phase, commit)
        version, created = TableVersion.objects.get_or_create(
            table=table, version=commit.version,
            defaults={
                "operation": commit.operation, "schema": commit.schema, "row_count": commit.row_count,
                "bytes": commit.bytes, "fingerprint": commit.fingerprint,
                "run": phase.run if made_here else None, "phase": phase if made_here else None,
                "attempt": commit.attempt if made_here else 0,
                "git_sha": phase.run.git_sha if made_here else "",
                "committed_at": commit.committed_at or phase.run.created_at,
                "source_as_of": commit.source_as_of if made_here else None,
            },
        )
        if not created and made_here and version.run_id is None:
            # Seen first as a read (or recorded before its maker's record landed): claim it now.
            version.run, version.phase, version.attempt, version.git_sha = (phase.run, phase, commit.attempt,
                                                                            phase.run.git_sha)
            version.save(update_fields=["run", "phase", "attempt", "git_sha"])
        if created:
            Table.objects.filter(pk=table.pk).update(updated_at=version.committed_at)
        TableEdge.objects.get_or_create(run_id=phase.run_id, phase=phase, table_version=version,
                                        direction=TableEdge.Direction.WRITE if made_here else TableEdge.Direction.READ)
        if version.fingerprint_pending:
            _fingerprint_later(version.pk)
        _freshness_from_reads(phase)
        return version


def _freshness_from_reads(phase: Phase) -> None:
    """A version computed from ingested tables reflects the source only as far as the oldest of
    them: the versions this phase wrote take the oldest ``source_as_of`` among those it read.
    Called after every edge, so the order in which a kind records reads and writes does not matter
    (a version with its own ``source_as_of``, an ingest phase's, reads nothing and is left alone)."""
    from django.db.models import Min, Q

    oldest = (TableVersion.objects.filter(edges__phase=phase, edges__direction=TableEdge.Direction.READ)
              .aggregate(oldest=Min("source_as_of"))["oldest"])
    if oldest is None:
        return
    (TableVersion.objects.filter(edges__phase=phase, edges__direction=TableEdge.Direction.WRITE)
     .filter(Q(source_as_of__isnull=True) | Q(source_as_of__gt=oldest)).update(source_as_of=oldest))


def table_version_source_advance(*, phase_id: int, lease_token: str, table_version: TableVersion,
                                 source_as_of: dt.datetime) -> None:
    """An ingest phase found nothing new up to ``source_as_of``: its table's current version
    reflects the source that far too (freshness only moves forward; fenced like every write)."""
    from django.db.models import Q

    with lease_fence(phase_id=phase_id, lease_token=lease_token):
        TableVersion.objects.filter(pk=table_version.pk).filter(
            Q(source_as_of__isnull=True) | Q(source_as_of__lt=source_as_of)).update(source_as_of=source_as_of)


def _fingerprint_later(version_id: int) -> None:
    from lakehouse.tasks import table_version_fingerprint

    transaction.on_commit(lambda: table_version_fingerprint.delay(version_id))


def table_version_find(*, phase: Phase, catalog_name: str, namespace: str, name: str,
                       version: int) -> TableVersion | None:
    """The recorded version ``version`` of a table of this phase's workspace and environment."""
    return TableVersion.objects.filter(
        table__workspace_id=phase.run.workspace_id, table__environment_id=phase.run.environment_id,
        table__catalog_name=catalog_name, table__namespace=namespace, table__name=name, version=version,
    ).first()


def table_read_record(*, phase_id: int, lease_token: str, table_version: TableVersion) -> None:
    """A read edge: this phase read ``table_version`` (fenced like every write)."""
    with lease_fence(phase_id=phase_id, lease_token=lease_token) as phase:
        if table_version.table.workspace_id != phase.run.workspace_id:
            raise ValueError("a phase cannot read another workspace's table")
        TableEdge.objects.get_or_create(run_id=phase.run_id, phase=phase, table_version=table_version,
                                        direction=TableEdge.Direction.READ)
        _freshness_from_reads(phase)


def registered_format(*, phase: Phase, catalog_name: str, namespace: str, name: str) -> str | None:
    """The format the registry knows for this table in the phase's workspace and environment."""
    return (Table.objects.filter(workspace_id=phase.run.workspace_id, environment_id=phase.run.environment_id,
                                 catalog_name=catalog_name, namespace=namespace, name=name)
            .values_list("format", flat=True).first())


# --- fingerprints, after the commit -----------------------------------------------------------

log = logging.getLogger("controlroom.lakehouse")
SWEEP_AGE = dt.timedelta(minutes=1)  # a version younger than this still has its own message coming
SWEEP_BATCH = 20  # versions the sweep enqueues per tick


def table_version_fingerprint_compute(version: TableVersion) -> str:
    """The canonical fingerprint of ``version``, read from its catalog at that exact snapshot or
    Delta version (CatalogError when the catalog, the table or the version is gone)."""
    import pyarrow as pa

    from lakehouse.catalogs import CatalogError, catalog_for
    from lakehouse.fingerprint import table_fingerprint
    from lakehouse.tables import delta_table, iceberg_batches, iceberg_table

    table = version.table
    lake = catalog_for(table.workspace, table.environment, table.catalog_name)
    if table.format == Table.Format.ICEBERG:
        tbl = iceberg_table(lake, table.namespace, table.name)
        if tbl is None or tbl.snapshot_by_id(version.version) is None:
            raise CatalogError(f"{table}: snapshot {version.version} is gone.")
        return table_fingerprint(iceberg_batches(tbl, version.version))
    at = delta_table(lake, table.namespace, table.name, version.version)
    if at is None:
        raise CatalogError(f"{table}: version {version.version} is gone.")
    dataset = at.to_pyarrow_dataset()
    # A reader, not a bare iterator: an empty version keeps its schema in the fingerprint.
    return table_fingerprint(pa.RecordBatchReader.from_batches(dataset.schema, dataset.to_batches()))


def table_version_fingerprint_fill(*, version_id: int) -> str:
    """Compute and store the version's fingerprint unless it has one (or needs none); returns the
    stored value. The update is conditional (``WHERE fingerprint = ''``): when two runs of it race,
    the first write stays, and both computed the same value from the same immutable version."""
    version = (TableVersion.objects.select_related("table__workspace", "table__environment")
               .filter(pk=version_id).first())
    if version is None or not version.fingerprint_pending:
        return version.fingerprint if version is not None else ""
    value = table_version_fingerprint_compute(version)
    if not TableVersion.objects.filter(pk=version_id, fingerprint="").update(fingerprint=value):
        log.info("fingerprint of table version %s was stored meanwhile", version_id)
    return TableVersion.objects.filter(pk=version_id).values_list("fingerprint", flat=True).first() or ""


def table_versions_unfingerprinted(*, older_than: dt.timedelta = SWEEP_AGE, limit: int = SWEEP_BATCH) -> list[int]:
    """Up to ``limit`` versions committed more than ``older_than`` ago still waiting for their
    fingerprint (their message was lost, or the computation failed). Picked at random, so a
    version that keeps failing (its catalog is gone) never starves the others."""
    return list(TableVersion.objects.filter(fingerprint="", committed_at__lte=timezone.now() - older_than)
                .exclude(operation__in=MAINTENANCE).order_by("?").values_list("pk", flat=True)[:limit])


__all__ = ["Commit", "registered_format", "table_read_record", "table_version_find",
           "table_version_fingerprint_compute", "table_version_fingerprint_fill", "table_version_record",
           "table_versions_unfingerprinted"]
