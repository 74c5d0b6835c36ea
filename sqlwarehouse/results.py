"""Stored results: a statement's Arrow batches streamed into Parquet in the artifact store, then
paged, sorted and exported from that file alone (the engine is never asked again).

Memory stays bounded by one batch on the way in (the writer flushes row groups) and on the way
out (CSV and Parquet downloads stream the file batch by batch). Reads go through the store
(ranged reads: local disk or S3); nothing here knows where the file lives.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from django.conf import settings

from artifacts.models import Blob
from artifacts.services import blob_store_file
from artifacts.storage import get_store
from controlroom.models import Workspace
from sqlwarehouse.engines import EngineError, StatementStream

PREVIEW_ROWS = 100
PREVIEW_CELL_CHARS = 2_000  # a preview cell longer than this is cut (the stored result keeps it whole)
# One batch of a result in memory at most (a single huge cell arrives in one batch): beyond it the
# query fails with a clear message instead of taking the worker's memory.
BATCH_MAX_BYTES = 256 * 2**20
ROW_GROUP_ROWS = 100_000
CSV_BATCH_ROWS = 20_000
MEDIA_TYPE = "application/vnd.apache.parquet"


def preview_cell(value: Any) -> Any:
    """A cell as the preview keeps it: JSON-safe, and text cut to PREVIEW_CELL_CHARS."""
    value = cell(value)
    if isinstance(value, str) and len(value) > PREVIEW_CELL_CHARS:
        return value[:PREVIEW_CELL_CHARS] + f"… ({len(value):,} characters)"
    return value


def cell(value: Any) -> Any:
    """JSON-safe cell; big integers and decimals become strings so no digit is lost."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, (decimal.Decimal, dt.date, dt.time, dt.datetime, dt.timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@dataclass
class StoredResult:
    blob: Blob | None
    columns: list[dict[str, str]]
    row_count: int
    truncated: bool
    preview: list[list[Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def store_stream(stream: StatementStream, *, workspace: Workspace, row_cap: int, on_rows=None,
                 on_preview: Callable[[list[dict[str, str]], list[list[Any]]], None] | None = None,
                 ) -> StoredResult:
    """Write the stream to Parquet (at most ``row_cap`` rows) and keep it in the artifact store,
    visible to ``workspace``.

    ``on_preview(columns, rows)`` is called once, with the first batch's rows (at most
    PREVIEW_ROWS; none for an empty result) before anything is written: the editor shows them
    while the rest is read and the file is stored."""
    columns = [{"name": n, "type": t} for n, t in zip(stream.columns, stream.types, strict=True)]
    previewed = on_preview is None
    tmp_dir = Path(settings.DATA_DIR) / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    rows, truncated, preview = 0, False, []
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="result-") as tmp:
        path = Path(tmp) / "result.parquet"
        writer: pq.ParquetWriter | None = None
        try:
            for batch in stream.batches:
                if batch.nbytes > BATCH_MAX_BYTES:
                    raise EngineError(f"The result holds more than {BATCH_MAX_BYTES // 2**20} MB in "
                                      f"{batch.num_rows:,} row(s): select fewer or narrower columns.")
                if rows + batch.num_rows > row_cap:
                    batch, truncated = batch.slice(0, row_cap - rows), True
                if len(preview) < PREVIEW_ROWS:
                    head = batch.slice(0, PREVIEW_ROWS - len(preview)).to_pylist()
                    preview += [[preview_cell(v) for v in row.values()] for row in head]
                if not previewed and preview:
                    previewed = True
                    on_preview(columns, list(preview))
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                if batch.num_rows:
                    writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
                rows += batch.num_rows
                if on_rows is not None:
                    on_rows(rows)
                if truncated:
                    break
            if not previewed:  # no row at all
                on_preview(columns, [])
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no batch at all: an empty result still gets a file with its columns
            schema = pa.schema([pa.field(c["name"] or f"_col{i}", pa.string()) for i, c in enumerate(columns)])
            pq.write_table(schema.empty_table(), path)
        blob = blob_store_file(workspace=workspace, path=path)
    manifest = {"columns": columns, "rows": rows, "bytes": blob.size, "sha256": blob.sha256, "media_type": MEDIA_TYPE,
                "truncated": truncated}
    return StoredResult(blob, columns, rows, truncated, preview, manifest)


def result_open(blob: Blob) -> BinaryIO:
    """The stored result's Parquet bytes as a stream from the store (for a download)."""
    return get_store().open(blob.sha256)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _page_source(parquet: pq.ParquetFile, offset: int, limit: int) -> tuple[pa.Table, int]:
    """Only the row groups that hold rows ``offset``..``offset+limit``, and the offset within them."""
    metadata, groups, seen, skipped = parquet.metadata, [], 0, 0
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if seen + rows <= offset:
            skipped += rows
        elif seen < offset + limit:
            groups.append(index)
        seen += rows
    if not groups:
        return parquet.schema_arrow.empty_table(), 0
    return parquet.read_row_groups(groups, use_threads=False), offset - skipped


def read_page(blob: Blob, *, offset: int, limit: int, sort: str | None = None,
              descending: bool = False) -> list[list[Any]]:
    """Rows ``offset``..``offset+limit`` of a stored result, optionally sorted by one column, read
    from the store by range (no engine is involved). Unsorted, only the row groups holding the page
    are fetched; sorted, DuckDB streams the whole result batch by batch through a top-N (spilling
    to disk if it must)."""
    with get_store().open_random(blob.sha256, size=blob.size) as fh:
        parquet = pq.ParquetFile(fh, pre_buffer=False)
        order = ""
        if sort:
            if sort not in parquet.schema_arrow.names:
                raise ValueError(f"There is no column {sort!r} in this result.")
            order = f"ORDER BY {_quoted(sort)} {'DESC' if descending else 'ASC'} NULLS LAST"
            source: Any = pa.RecordBatchReader.from_batches(
                parquet.schema_arrow, parquet.iter_batches(batch_size=CSV_BATCH_ROWS, use_threads=False))
        else:
            source, offset = _page_source(parquet, offset, limit)
        tmp_dir = Path(settings.DATA_DIR) / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="page-") as spill:
            con = duckdb.connect(config={"memory_limit": "256MB", "threads": 1, "temp_directory": spill})
            try:
                con.register("result_source", source)
                table = con.sql(f"SELECT * FROM result_source {order} LIMIT $limit OFFSET $offset",
                                params={"limit": limit, "offset": offset}).to_arrow_table()
            finally:
                con.close()
    return [[preview_cell(v) for v in row] for row in zip(*(c.to_pylist() for c in table.columns), strict=True)]


def csv_chunks(blob: Blob) -> Iterator[bytes]:
    """The stored result as CSV, one batch at a time (header first), read from the store by range."""
    # One row group read at a time, on this thread: memory stays at about one batch's worth.
    with get_store().open_random(blob.sha256, size=blob.size) as fh:
        parquet = pq.ParquetFile(fh, pre_buffer=False)
        header = True
        for batch in parquet.iter_batches(batch_size=CSV_BATCH_ROWS, use_threads=False):
            out = io.BytesIO()
            pacsv.write_csv(batch, out, write_options=pacsv.WriteOptions(include_header=header))
            header = False
            yield out.getvalue()
        if header:  # no rows: still the header
            out = io.BytesIO()
            pacsv.write_csv(parquet.schema_arrow.empty_table(), out)
            yield out.getvalue()
