"""The canonical content fingerprint of a table (recipe in STACK-NOTES, "Iceberg and Delta without a JVM").

Two tables get the same fingerprint when they hold the same rows, whatever wrote them (PyIceberg,
delta-rs, DuckDB, Spark), however their files are laid out and chunked, and in whatever row or
column order. The recipe, versioned as ``RECIPE``:

1. types normalised: every integer width to int64 (uint64 kept), floats to float64, strings to
   large_string, binaries (fixed-size ones too, e.g. UUIDs) to large_binary, timestamps to
   microseconds in UTC (a timestamp without a zone is read as UTC; nanoseconds are truncated),
   dates to date32, times to time64[us], decimals kept with their precision and scale,
   dictionaries decoded; nested values (lists, structs, maps) become their JSON text, and the
   schema's metadata keeps their normalised types;
2. float values made canonical: every NaN is the one quiet NaN, -0.0 is 0.0;
3. columns sorted by name, rows sorted by every column (nulls first), by DuckDB, which spills to
   disk past ``memory_limit`` so a big table is never held twice in memory;
4. the sorted rows rebuilt into fixed-size batches whose bytes are defined everywhere (zeros under
   nulls, zeroed bitmap tails), written as one Arrow IPC stream straight into sha256.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import tempfile
from collections.abc import Iterable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

RECIPE = "controlroom-fingerprint-1"
BATCH_ROWS = 65_536  # the IPC stream's batch size: part of the recipe, never the input's chunking
_META_KEY = b"controlroom.fingerprint"


class FingerprintError(ValueError):
    """The data cannot be fingerprinted (a column type the recipe does not cover, duplicate names)."""


def _normal_type(t: pa.DataType) -> pa.DataType:
    """The type a column of type ``t`` has in the canonical stream (before nested values become JSON)."""
    if pa.types.is_dictionary(t):
        return _normal_type(t.value_type)
    if pa.types.is_uint64(t):
        return t
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_boolean(t) or pa.types.is_null(t):
        return t
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.large_string()
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t)):
        return pa.large_binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_decimal(t):
        return pa.decimal128(t.precision, t.scale) if t.precision <= 38 else t
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.large_list(_normal_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _normal_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_normal_type(t.key_type), _normal_type(t.item_type))
    raise FingerprintError(f"cannot fingerprint a column of type {t}")


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_large_list(t) or pa.types.is_struct(t) or pa.types.is_map(t)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Normaliser:
    """Casts each incoming batch to the normalised schema, columns sorted by name."""

    def __init__(self, schema: pa.Schema) -> None:
        names = list(schema.names)
        if len(set(names)) != len(names):
            raise FingerprintError("cannot fingerprint a table with duplicate column names")
        self.names = sorted(names)
        self.schema = pa.schema([pa.field(n, _normal_type(schema.field(n).type)) for n in self.names])

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = []
        for field in self.schema:
            column = batch.column(field.name)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if column.type != field.type:
                # Lossy by design: nanoseconds to microseconds, date64's milliseconds to days.
                column = column.cast(field.type, safe=not (pa.types.is_temporal(field.type)))
            if pa.types.is_float64(field.type):
                column = pc.if_else(pc.is_nan(column), math.nan, column)
                column = pc.if_else(pc.equal(column, 0.0), 0.0, column)  # -0.0 sorts beside 0.0
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def _reader(data: pa.Table | Iterable[pa.RecordBatch]) -> pa.RecordBatchReader | None:
    """The input as one stream of batches, or None for an iterable with no batch at all."""
    if isinstance(data, pa.Table):
        return pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
    if isinstance(data, pa.RecordBatchReader):
        return data
    batches = iter(data)
    first = next(batches, None)
    if first is None:
        return None

    def chained() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return pa.RecordBatchReader.from_batches(first.schema, chained())


def _bitmap(flags: pa.Array) -> pa.Buffer:
    """A boolean array's bits as a fresh buffer whose unused tail bits are zero."""
    if flags.offset % 8:
        flags = pa.concat_arrays([pa.array([], pa.bool_()), flags])  # a copy, aligned at bit 0
    start, nbytes = flags.offset // 8, (len(flags) + 7) // 8
    raw = bytearray(flags.buffers()[1].to_pybytes()[start:start + nbytes])
    if len(flags) % 8:
        raw[-1] &= (1 << (len(flags) % 8)) - 1
    return pa.py_buffer(bytes(raw))


def _zero(t: pa.DataType) -> pa.Scalar:
    if pa.types.is_large_string(t):
        return pa.scalar("", t)
    if pa.types.is_large_binary(t):
        return pa.scalar(b"", t)
    if pa.types.is_boolean(t):
        return pa.scalar(False)
    if pa.types.is_date32(t):
        return pa.array([0], pa.int32()).view(t)[0]
    if pa.types.is_decimal(t):  # an int64 0 does not cast to a decimal narrower than 21 digits
        return pa.scalar(decimal.Decimal(0), t)
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return pa.scalar(0, pa.int64()).cast(t)
    return pa.array([0], pa.int64()).view(t)[0]  # timestamp, time64


def _canonical_array(column: pa.Array | pa.ChunkedArray, t: pa.DataType) -> pa.Array:
    """``column`` rebuilt so that every byte the IPC writer writes is defined by its values alone.

    Engines leave whatever they like under null slots (and in a bitmap's unused tail bits); the
    same rows from two engines must still give the same bytes."""
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
    if column.type != t:
        column = column.cast(t)
    if pa.types.is_null(t):
        return pa.nulls(len(column))
    nulls = column.null_count
    validity = _bitmap(pc.is_valid(column)) if nulls else None
    values = pc.fill_null(column, _zero(t)) if nulls else column
    if pa.types.is_boolean(t):
        return pa.Array.from_buffers(t, len(values), [validity, _bitmap(values)], null_count=nulls)
    if validity is not None and values.offset:
        values = pa.concat_arrays([pa.array([], t), values])
    return pa.Array.from_buffers(t, len(values), [validity, *values.buffers()[1:]], null_count=nulls,
                                 offset=0 if validity is not None else values.offset)


def _fixed_batches(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.Table]:
    """The stream re-cut into tables of exactly ``size`` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        if not batch.num_rows:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


class _HashSink:
    """A write-only file that feeds sha256 (the IPC stream is never held in memory)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def table_fingerprint(data: pa.Table | Iterable[pa.RecordBatch], *, memory_limit: str = "512MB",
                      threads: int | None = None) -> str:
    """The canonical sha256 (hex) of a table's content: see the module docstring for the recipe.

    ``data`` is an Arrow table or any iterable of record batches with one schema (a
    ``RecordBatchReader`` from a PyIceberg or delta-rs scan streams without being held in memory).
    DuckDB sorts within ``memory_limit`` and spills the rest to a temporary folder."""
    reader = _reader(data)
    if reader is None:
        return _digest(pa.schema([]), iter(()))
    normalise = _Normaliser(reader.schema)
    schema = normalise.schema
    if not schema.names:
        return _digest(schema, iter(()))
    source = pa.RecordBatchReader.from_batches(schema, (normalise(b) for b in reader))
    out_schema = pa.schema([pa.field(f.name, pa.large_string() if _is_nested(f.type) else f.type) for f in schema])
    with tempfile.TemporaryDirectory(prefix="fingerprint-") as spill:
        config = {"memory_limit": memory_limit, "temp_directory": spill, "autoinstall_known_extensions": False,
                  "autoload_known_extensions": False}
        if threads:
            config["threads"] = threads
        con = duckdb.connect(config=config)
        try:
            con.execute("SET TimeZone = 'UTC'")
            projection = ", ".join(
                f"to_json({_quote(f.name)}) AS {_quote(f.name)}" if _is_nested(f.type) else _quote(f.name)
                for f in schema)
            order = ", ".join(f"{_quote(n)} ASC NULLS FIRST" for n in schema.names)
            con.register("fingerprint_source", source)
            result = con.sql(f"SELECT * FROM (SELECT {projection} FROM fingerprint_source) ORDER BY {order}")
            sorted_reader = result.to_arrow_reader(BATCH_ROWS)
            tables = (
                pa.Table.from_arrays([_canonical_array(t.column(f.name), f.type) for f in out_schema],
                                     schema=out_schema)
                for t in _fixed_batches(sorted_reader, BATCH_ROWS))
            return _digest(out_schema, tables, nested={f.name: str(f.type) for f in schema if _is_nested(f.type)})
        finally:
            con.close()


def _digest(schema: pa.Schema, tables: Iterator[pa.Table], *, nested: dict[str, str] | None = None) -> str:
    meta = json.dumps({"recipe": RECIPE, "nested": nested or {}}, sort_keys=True).encode()
    schema = schema.with_metadata({_META_KEY: meta})
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
        for table in tables:
            for batch in table.replace_schema_metadata(schema.metadata).to_batches():
                writer.write_batch(batch)
    return sink.digest.hexdigest()
