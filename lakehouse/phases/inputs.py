"""Lakehouse tables a phase's SQL reads (``inputs``): read at their current version, recorded as
read lineage (a TableVersion is registered for a version no phase of ours made)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from django.utils import timezone

from lakehouse.catalogs import CatalogError, Lakehouse
from lakehouse.phases import common
from lakehouse.services import (
    Commit,
    registered_format,
    table_read_record,
    table_version_find,
    table_version_record,
)
from lakehouse.tables import delta_stats, delta_table, iceberg_stats, iceberg_table, table_arrow
from runs.executors.base import PhaseFailure


def read_input(ctx: Any, lake: Lakehouse, namespace: str, name: str) -> tuple[pa.Table, Commit]:
    """The input's rows now, and the Commit describing the version read."""
    fmt = registered_format(phase=ctx.phase, catalog_name=lake.name, namespace=namespace, name=name)
    if fmt is None:
        fmt = "iceberg" if iceberg_table(lake, namespace, name) is not None else \
            "delta" if delta_table(lake, namespace, name) is not None else None
    if fmt is None:
        raise PhaseFailure(f"input {namespace}.{name}: catalog '{lake.name}' has no such table")
    try:
        data, version = table_arrow(lake, fmt, namespace, name)
    except CatalogError as exc:
        raise PhaseFailure(f"input {namespace}.{name}: {exc}") from None
    if fmt == "iceberg":
        tbl = iceberg_table(lake, namespace, name)
        snapshot = tbl.snapshot_by_id(version) if version else None
        stats = iceberg_stats(tbl, version) if snapshot else None
        committed_at = (dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=dt.UTC) if snapshot
                        else timezone.now())
        operation = _iceberg_operation(snapshot)
    else:
        stats = delta_stats(delta_table(lake, namespace, name, version))
        committed_at, operation = timezone.now(), "append"
    ctx.log(f"input {namespace}.{name}: {fmt} version {version}, {data.num_rows} rows")
    commit = Commit(format=fmt, catalog_name=lake.name, namespace=namespace, name=name,
                    location=stats.location if stats else "", version=version, operation=operation,
                    schema=stats.schema if stats else [], row_count=data.num_rows,
                    bytes=stats.bytes if stats else 0, committed_at=committed_at)
    return data, commit


def _iceberg_operation(snapshot: Any) -> str:
    op = str(getattr(snapshot.summary, "operation", "append").value if snapshot else "create")
    return op if op in ("append", "overwrite") else "overwrite"


def record_reads(ctx: Any, reads: list[tuple[Commit, pa.Table]]) -> None:
    """A read edge per input, under the lease; a version nobody recorded is registered first
    (its fingerprint is computed after the commit, like a written version's)."""
    for commit, _data in reads:
        if not commit.version:
            continue  # an empty table without a snapshot: nothing was read
        known = table_version_find(phase=ctx.phase, catalog_name=commit.catalog_name, namespace=commit.namespace,
                                   name=commit.name, version=commit.version)
        if known is not None:
            table_read_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, table_version=known)
            continue
        table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit, made_here=False)


def read_inputs(ctx: Any, lake: Lakehouse,
                config: dict[str, Any]) -> tuple[dict[str, pa.Table], list[tuple[Commit, pa.Table]]]:
    """Each input table's current version as Arrow (a view named by the table's name), and what
    to record as read lineage once the phase's own commit is done."""
    views: dict[str, pa.Table] = {}
    reads: list[tuple[Commit, pa.Table]] = []
    for item in config.get("inputs", []):
        namespace, name = common.split_table(item)
        data, commit = read_input(ctx, lake, namespace, name)
        views[name] = data
        reads.append((commit, data))
    return views, reads
