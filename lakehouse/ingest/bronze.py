"""The bronze side of ingestion: the ingest state an Iceberg table carries, schema drift, and the
live keys a delete reconciliation compares with the source.

The watermark lives in the snapshot summary of the commit that brought the rows up to it, so the
data and the watermark can only move together: a run killed between two commits resumes from the
last one, and no row is written twice or skipped. A bronze table is a change log: each row is the
source row as read, plus ``_cr_deleted`` (a tombstone written by the delete reconciliation),
``_cr_ingested_at`` and ``_cr_run``; the current rows are the newest record per key that is not a
tombstone (what the Odoo template's silver phases compute)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from lakehouse.phases import common
from runs.executors.base import PhaseFailure

WATERMARK = "controlroom.ingest.watermark"  # JSON [watermark, key…] of the last row committed
AS_OF = "controlroom.ingest.source-as-of"  # table property: the last read bound (every change up to it is in)
RECONCILED = "controlroom.ingest.reconciled-at"  # table property: the last delete reconciliation
DELETED, INGESTED_AT, RUN = "_cr_deleted", "_cr_ingested_at", "_cr_run"
META = (DELETED, INGESTED_AT, RUN)
META_FIELDS = [pa.field(DELETED, pa.bool_()), pa.field(INGESTED_AT, pa.timestamp("us", tz="UTC")),
               pa.field(RUN, pa.int64())]


@dataclass(frozen=True)
class IngestState:
    """Where a bronze table stands: the position after its last committed row, and the bound up to
    which the source is known to be in it."""

    after: tuple[Any, ...] | None
    source_as_of: dt.datetime | None
    reconciled_at: dt.datetime | None


def encode_position(values: tuple[Any, ...]) -> str:
    """A watermark position as JSON: timestamps, dates and decimals tagged, so they come back as
    the same Python values the source's driver gives (and compare with the source's columns)."""
    def tagged(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return {"ts": value.isoformat()}
        if isinstance(value, dt.date):
            return {"date": value.isoformat()}
        if isinstance(value, Decimal):
            return {"dec": str(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)  # uuid and the like: compared as text, their PostgreSQL input form

    return json.dumps([tagged(v) for v in values])


def decode_position(text: str) -> tuple[Any, ...]:
    """The inverse of ``encode_position``."""
    def untagged(value: Any) -> Any:
        if isinstance(value, dict):
            if "ts" in value:
                return dt.datetime.fromisoformat(value["ts"])
            if "date" in value:
                return dt.date.fromisoformat(value["date"])
            return Decimal(value["dec"])
        return value

    return tuple(untagged(v) for v in json.loads(text))


def ingest_state(tbl: Any | None) -> IngestState:
    """The state recorded in the newest snapshot that carries one (other writers, compaction for
    one, make snapshots without it); an empty state for a table not created yet."""
    if tbl is None:
        return IngestState(None, None, None)
    reconciled = tbl.properties.get(RECONCILED)
    reconciled_at = dt.datetime.fromisoformat(reconciled) if reconciled else None
    snapshot = tbl.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        if summary is not None and summary.get(WATERMARK):
            as_of = tbl.properties.get(AS_OF)
            return IngestState(decode_position(summary[WATERMARK]),
                               dt.datetime.fromisoformat(as_of) if as_of else None, reconciled_at)
        snapshot = tbl.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return IngestState(None, None, reconciled_at)


def with_meta(data: pa.Table, *, run_id: int, deleted: bool, at: dt.datetime) -> pa.Table:
    """``data`` with the three bronze columns appended."""
    n = data.num_rows
    return pa.Table.from_arrays(
        [*data.columns, pa.array([deleted] * n, pa.bool_()), pa.array([at] * n, META_FIELDS[1].type),
         pa.array([run_id] * n, pa.int64())],
        schema=pa.schema([*data.schema, *META_FIELDS]))


def drift(source: pa.Schema, tbl: Any, *, table: str, policy: str) -> tuple[list[str], list[str]]:
    """(columns the source added, columns it dropped) against the bronze table, after applying
    ``policy``: ``fail`` refuses new columns naming them; a changed type is always refused (a
    column's history cannot change type in place)."""
    theirs = pa.schema([f for f in tbl.schema().as_arrow() if f.name not in META])
    added, missing, retyped = common.schema_differences(source, theirs)
    if retyped:
        raise PhaseFailure(f"{table}: the source changed the type of column(s) {', '.join(retyped)}; "
                           "bronze keeps each column's history in one type: ingest it into a new table")
    if added and policy == "fail":
        raise PhaseFailure(f"{table}: the source has new column(s) {', '.join(added)} and schema_drift is "
                           "'fail'; set schema_drift: add to take them, or list the columns to read")
    return added, missing


def fit(data: pa.Table, tbl_schema: pa.Schema) -> pa.Table:
    """A chunk shaped like the table: columns the source dropped are written as nulls, and the
    rest cast to the table's (compatible) types."""
    for field in tbl_schema:
        if field.name not in data.column_names:
            data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
    data = data.select([f.name for f in tbl_schema])
    return common.conform(data, tbl_schema)


def live_keys(tbl: Any, *, keys: list[str], watermark: str) -> pa.Table:
    """The keys whose newest bronze record is not a tombstone (read: keys and bookkeeping columns only)."""
    import duckdb

    scan = tbl.scan(selected_fields=(*keys, watermark, DELETED, INGESTED_AT)).to_arrow()
    order = f'"{INGESTED_AT}" DESC, "{watermark}" DESC NULLS LAST, "{DELETED}" DESC'
    key_list = ", ".join(f'"{k}"' for k in keys)
    with duckdb.connect() as db:
        db.register("bronze", scan)
        return db.sql(
            f"SELECT {key_list} FROM bronze QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY {order}) = 1 "
            f'AND NOT "{DELETED}"').to_arrow_table()
