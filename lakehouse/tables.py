"""Reading lakehouse tables through their catalog: Arrow data, schema, size, at a version.

Used by the phases (sources, fingerprints of committed versions) and by anything that reads a
registered table (checks, previews). Formats: ``iceberg`` (PyIceberg) and ``delta`` (delta-rs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lakehouse.catalogs import CatalogError, Lakehouse, check_identifier


@dataclass
class VersionStats:
    """What a version holds, as recorded in a TableVersion."""

    version: int
    schema: list[dict[str, Any]]
    row_count: int
    bytes: int
    location: str


def iceberg_table(lake: Lakehouse, namespace: str, name: str) -> Any | None:
    """The PyIceberg table ``namespace.name``, or None if the catalog has no such table."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    check_identifier(namespace, "namespace")
    check_identifier(name, "table name")
    try:
        return lake.iceberg().load_table((namespace, name))
    except (NoSuchTableError, NoSuchNamespaceError):
        return None


def delta_table(lake: Lakehouse, namespace: str, name: str, version: int | None = None) -> Any | None:
    """The delta-rs table ``namespace.name`` (at ``version``), or None if there is none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = lake.delta_uri(namespace, name)
    try:
        return DeltaTable(uri, version=version, storage_options=lake.delta_storage_options() or None)
    except TableNotFoundError:
        return None


def iceberg_schema_json(schema: Any) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.field_type), "nullable": not f.required} for f in schema.fields]


def delta_schema_json(schema: Any) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": _delta_type_name(f.type), "nullable": bool(f.nullable)} for f in schema.fields]


def _delta_type_name(t: Any) -> str:
    text = str(getattr(t, "type", "") or t)
    return text if getattr(t, "type", None) else str(t)


def iceberg_stats(tbl: Any, snapshot_id: int) -> VersionStats:
    snapshot = tbl.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise CatalogError(f"Snapshot {snapshot_id} is not in the table's history.")
    summary = snapshot.summary
    schema = tbl.schemas().get(snapshot.schema_id) if snapshot.schema_id is not None else None
    return VersionStats(version=snapshot_id, schema=iceberg_schema_json(schema or tbl.schema()),
                        row_count=int(summary.get("total-records") or 0),
                        bytes=int(summary.get("total-files-size") or 0), location=tbl.location())


def delta_stats(dt: Any) -> VersionStats:
    import pyarrow.compute as pc

    actions = pa.table(dt.get_add_actions(flatten=True))
    rows = pc.sum(actions["num_records"]).as_py() if actions.num_rows else 0
    size = pc.sum(actions["size_bytes"]).as_py() if actions.num_rows else 0
    return VersionStats(version=dt.version(), schema=delta_schema_json(dt.schema()), row_count=int(rows or 0),
                        bytes=int(size or 0), location=dt.table_uri.rstrip("/"))


def iceberg_batches(tbl: Any, snapshot_id: int | None) -> pa.RecordBatchReader:
    """The table's rows at ``snapshot_id`` (the current one if None), streamed."""
    scan = tbl.scan(snapshot_id=snapshot_id) if snapshot_id is not None else tbl.scan()
    return scan.to_arrow_batch_reader()


def delta_batches(dt: Any) -> Iterator[pa.RecordBatch]:
    """The rows of the loaded version of a Delta table, streamed."""
    return iter(dt.to_pyarrow_dataset().to_batches())


def table_arrow(lake: Lakehouse, fmt: str, namespace: str, name: str, *, version: int | None = None,
                limit: int | None = None) -> tuple[pa.Table, int]:
    """The rows of ``namespace.name`` (at ``version``, else the current one) and the version read.
    Raises CatalogError when the table or version does not exist."""
    if fmt == "iceberg":
        tbl = iceberg_table(lake, namespace, name)
        if tbl is None:
            raise CatalogError(f"Catalog '{lake.name}' has no Iceberg table {namespace}.{name}.")
        snapshot = tbl.snapshot_by_id(version) if version is not None else tbl.current_snapshot()
        if version is not None and snapshot is None:
            raise CatalogError(f"Table {namespace}.{name} has no snapshot {version}.")
        if snapshot is None:  # created, never written
            return tbl.schema().as_arrow().empty_table(), 0
        scan = tbl.scan(snapshot_id=snapshot.snapshot_id, limit=limit)
        return scan.to_arrow(), snapshot.snapshot_id
    if fmt == "delta":
        dt = delta_table(lake, namespace, name, version)
        if dt is None:
            raise CatalogError(f"Catalog '{lake.name}' has no Delta table {namespace}.{name}.")
        dataset = dt.to_pyarrow_dataset()
        data = dataset.head(limit) if limit is not None else dataset.to_table()
        return data, dt.version()
    raise CatalogError(f"Unknown table format {fmt!r}.")
