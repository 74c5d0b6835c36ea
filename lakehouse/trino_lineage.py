"""Table versions and lineage of `trino` phases (issue 10, section 4).

A trino phase's SQL names Trino's catalogs, which Control Room does not parse for tables; the
phase declares instead which of the workspace's catalog connections its Trino catalog is
(``catalog``, default "lakehouse"), the tables its statements write (``outputs``) and the tables
they read (``inputs``), each as ``namespace.name`` of that catalog.

Before the first statement the declared tables' snapshots are noted. After the statements (and
after a failing statement, for what the earlier ones committed) every snapshot of an output that
appeared meanwhile and carries one of this phase's Trino query ids (``trino_query_id``, which
Trino's Iceberg connector writes in each snapshot's summary) is recorded as a TableVersion with a
write edge; a snapshot another query committed meanwhile is not this phase's. Each input gets a
read edge at the version read: its current snapshot before the first statement.

Each recorded snapshot is read back once through PyIceberg, streamed: its canonical fingerprint
and its row count come from that read (Trino's MERGE, UPDATE and DELETE write row-level deletes,
which the summary's ``total-records`` still counts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lakehouse.catalogs import EMBEDDED_NAME, Lakehouse
from lakehouse.phases import common
from lakehouse.services import (
    Commit,
    registered_format,
    table_read_record,
    table_version_find,
    table_version_record,
)
from lakehouse.tables import iceberg_batches, iceberg_stats, iceberg_table
from runs.executors.base import PhaseFailure

FIELDS = {"catalog", "outputs", "inputs"}
TRINO_QUERY_ID = "trino_query_id"  # Trino's Iceberg connector: the query that committed the snapshot
# The statement kind (sqlcheck.statement_kind) that made a snapshot, as a TableVersion operation.
_OPERATIONS = (("CREATE", "create"), ("INSERT", "append"), ("MERGE", "merge"), ("UPDATE", "overwrite"),
               ("DELETE", "overwrite"), ("TRUNCATE", "overwrite"))
_TABLE_FORM = "namespace.name of the catalog connection (plain lower-case identifiers)"


def config_errors(config: dict[str, Any]) -> list[str]:
    """What is wrong with a trino phase's lineage fields (``catalog``, ``outputs``, ``inputs``)."""
    errors = []
    name = config.get("catalog", EMBEDDED_NAME)
    if not (isinstance(name, str) and common.CONN_NAME.fullmatch(name)):
        errors.append(f"'catalog' must be a catalog connection's name (letters, digits, - and _), not {name!r}")
    for key in ("outputs", "inputs"):
        if key not in config:
            continue
        items = config[key]
        if not (isinstance(items, list) and items):
            errors.append(f"'{key}' must be a non-empty list of tables, each {_TABLE_FORM}")
            continue
        for item in items:
            if common.split_table(item) is None:
                errors.append(f"'{key}' entry {item!r} is not a table name: {_table_hint(item)}")
        if len({str(i) for i in items}) != len(items):
            errors.append(f"'{key}' names a table twice")
    if "catalog" in config and not (config.get("outputs") or config.get("inputs")):
        errors.append("'catalog' has no use without 'outputs' or 'inputs' (the tables whose versions to record)")
    return errors


def _table_hint(item: Any) -> str:
    if isinstance(item, str) and item.count(".") == 2:
        return (f"write {item.split('.', 1)[1]!r}, the {_TABLE_FORM} named by 'catalog', "
                "not Trino's catalog.schema.table")
    return f"write it as {_TABLE_FORM}"


def tables(config: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """The (namespace, name) tables a valid config declares under ``key`` (outputs or inputs)."""
    return [common.split_table(item) for item in config.get(key) or []]


@dataclass
class _Output:
    namespace: str
    name: str
    before: set[int] | None  # the snapshot ids before the first statement; None: no such table


@dataclass
class _Input:
    namespace: str
    name: str
    tbl: Any
    snapshot: Any  # the current snapshot before the first statement: the version the statements read


@dataclass
class Lineage:
    """The declared tables as they were before the phase's first statement."""

    lake: Lakehouse
    outputs: list[_Output] = field(default_factory=list)
    inputs: list[_Input] = field(default_factory=list)


def lineage_before(ctx: Any, config: dict[str, Any]) -> Lineage | None:
    """Note the declared tables' snapshots (call right before the first statement); None when the
    phase declares no table. PhaseFailure when the catalog cannot be used or a table is Delta."""
    outputs, inputs = tables(config, "outputs"), tables(config, "inputs")
    if not outputs and not inputs:
        return None
    lake = common.lakehouse_for(ctx, config)
    lineage = Lineage(lake)
    for namespace, name in dict.fromkeys(outputs + inputs):
        if registered_format(phase=ctx.phase, catalog_name=lake.name, namespace=namespace, name=name) == "delta":
            raise PhaseFailure(f"{namespace}.{name} is a Delta table in catalog '{lake.name}'; a trino phase "
                               "records Iceberg tables only")
    for namespace, name in outputs:
        tbl = iceberg_table(lake, namespace, name)
        lineage.outputs.append(_Output(namespace, name, None if tbl is None else
                                       {s.snapshot_id for s in tbl.snapshots()}))
    for namespace, name in inputs:
        tbl = iceberg_table(lake, namespace, name)
        snapshot = tbl.current_snapshot() if tbl is not None else None
        if snapshot is None and (namespace, name) not in outputs:
            ctx.log(f"input {namespace}.{name}: catalog '{lake.name}' has no Iceberg table with a snapshot "
                    "before the first statement; no read is recorded", level="warning")
        if snapshot is not None:
            lineage.inputs.append(_Input(namespace, name, tbl, snapshot))
    return lineage


def lineage_record(ctx: Any, lineage: Lineage, queries: dict[str, str], *, finished: bool) -> list[dict[str, Any]]:
    """Record the outputs' snapshots this phase's ``queries`` (Trino query id → statement kind)
    committed, with write edges, and the inputs' read edges; one entry per recorded version.
    ``finished``: every statement succeeded (an output never written is then worth a warning)."""
    lake, recorded = lineage.lake, []
    for out in lineage.outputs:
        qualified = f"{out.namespace}.{out.name}"
        tbl = iceberg_table(lake, out.namespace, out.name)
        mine = _committed_by(tbl, out.before, queries) if tbl is not None else []
        if not mine:
            if finished:
                ctx.log(f"output {qualified}: no statement of this phase committed to it in catalog "
                        f"'{lake.name}' (is 'outputs' right?)", level="warning")
            continue
        for snapshot in mine:
            operation = _operation(snapshot, queries)
            version = table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token,
                                           commit=snapshot_commit(lake, tbl, snapshot, out.namespace, out.name,
                                                                  operation=operation, attempt=ctx.phase.attempt))
            ctx.log(f"recorded {qualified} version {version.version} ({operation}, {version.row_count} rows)",
                    table=qualified, version=version.version)
            recorded.append({"table": qualified, "format": "iceberg", "catalog": lake.name,
                             "version": version.version, "operation": operation, "rows": version.row_count,
                             "fingerprint": version.fingerprint})
    for read in lineage.inputs:
        _record_read(ctx, lake, read)
    return recorded


def _committed_by(tbl: Any, before: set[int] | None, queries: dict[str, str]) -> list[Any]:
    """The snapshots that appeared since ``before`` and that one of ``queries`` committed, oldest
    first (another writer's commits meanwhile, PyIceberg's or another Trino query's, are not)."""
    fresh = [s for s in tbl.snapshots() if before is None or s.snapshot_id not in before]
    mine = [s for s in fresh if s.summary is not None and s.summary.get(TRINO_QUERY_ID) in queries]
    return sorted(mine, key=lambda s: (s.sequence_number or 0, s.timestamp_ms))


def _operation(snapshot: Any, queries: dict[str, str]) -> str:
    """The TableVersion operation: the statement's kind when known, else Iceberg's own operation."""
    summary = snapshot.summary
    kind = queries.get(summary.get(TRINO_QUERY_ID) or "", "") if summary else ""
    for prefix, operation in _OPERATIONS:
        if kind.startswith(prefix):
            return operation
    iceberg_op = str(getattr(summary.operation, "value", summary.operation)) if summary else "append"
    return {"append": "append", "replace": "optimize"}.get(iceberg_op, "overwrite")


def snapshot_commit(lake: Lakehouse, tbl: Any, snapshot: Any, namespace: str, name: str, *, operation: str,
                    attempt: int) -> Commit:
    """The Commit describing ``snapshot``, its fingerprint and row count from one streamed read."""
    stats = iceberg_stats(tbl, snapshot.snapshot_id)
    reader = iceberg_batches(tbl, snapshot.snapshot_id)
    rows = 0

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for batch in reader:
            rows += batch.num_rows
            yield batch

    # A reader, not a bare iterator: an empty snapshot keeps its schema in the fingerprint.
    fingerprint = common.fingerprint(pa.RecordBatchReader.from_batches(reader.schema, counted()))
    return Commit(format="iceberg", catalog_name=lake.name, namespace=namespace, name=name, location=stats.location,
                  version=snapshot.snapshot_id, operation=operation, schema=stats.schema, row_count=rows,
                  bytes=stats.bytes, fingerprint=fingerprint, attempt=attempt,
                  committed_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=dt.UTC))


def _record_read(ctx: Any, lake: Lakehouse, read: _Input) -> None:
    """A read edge at the version read; a version nobody recorded is registered first."""
    known = table_version_find(phase=ctx.phase, catalog_name=lake.name, namespace=read.namespace, name=read.name,
                               version=read.snapshot.snapshot_id)
    if known is None:
        commit = snapshot_commit(lake, read.tbl, read.snapshot, read.namespace, read.name,
                                 operation=_operation(read.snapshot, {}), attempt=0)
        known = table_version_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, commit=commit,
                                     made_here=False)
    else:
        table_read_record(phase_id=ctx.phase.pk, lease_token=ctx.lease_token, table_version=known)
    ctx.log(f"read {read.namespace}.{read.name} version {known.version}", table=f"{read.namespace}.{read.name}",
            version=known.version)


__all__ = ["FIELDS", "Lineage", "config_errors", "lineage_before", "lineage_record", "snapshot_commit", "tables"]
