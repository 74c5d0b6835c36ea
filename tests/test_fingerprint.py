"""The canonical table fingerprint: same rows, same fingerprint, whatever the layout or engine."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from lakehouse.fingerprint import FingerprintError, table_fingerprint

UTC = dt.UTC


def sample(n: int = 3000) -> pa.Table:
    base = dt.datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table({
        "id": pa.array(range(n), pa.int32()),
        "name": pa.array([None if i % 11 == 0 else f"name {i % 37}" for i in range(n)], pa.string()),
        "amount": pa.array([Decimal(i % 1000) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "score": pa.array([None if i % 13 == 0 else (i % 29) / 7 for i in range(n)], pa.float64()),
        "ok": pa.array([None if i % 17 == 0 else i % 2 == 0 for i in range(n)]),
        "day": pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=i % 40) for i in range(n)], pa.date32()),
        "at": pa.array([base + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
    })


def shuffled(table: pa.Table, seed: int = 7) -> pa.Table:
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    return table.take(pa.array(order))


def test_invariant_under_row_order_column_order_and_chunking() -> None:
    table = sample()
    expected = table_fingerprint(table)
    assert len(expected) == 64
    assert table_fingerprint(shuffled(table)) == expected
    reordered = table.select(list(reversed(table.column_names)))
    assert table_fingerprint(reordered) == expected
    assert table_fingerprint(shuffled(table).to_batches(max_chunksize=97)) == expected
    assert table_fingerprint(pa.Table.from_batches(table.to_batches(max_chunksize=1000))) == expected
    assert table_fingerprint(iter(table.to_batches(max_chunksize=5))) == expected


def test_invariant_under_type_widths_dictionaries_and_time_units() -> None:
    table = sample()
    widened = pa.table({
        "id": table["id"].cast(pa.int64()),
        "name": table["name"].cast(pa.large_string()).dictionary_encode(),
        "amount": table["amount"],
        "score": table["score"],
        "ok": table["ok"],
        "day": table["day"],
        "at": table["at"].cast(pa.timestamp("ns", tz="UTC")),
    })
    assert table_fingerprint(widened) == table_fingerprint(table)
    # A timestamp without a zone is read as UTC (Delta's timestamp_ntz beside Iceberg's timestamptz).
    naive = table.set_column(6, "at", table["at"].cast(pa.timestamp("us")))
    assert table_fingerprint(naive) == table_fingerprint(table)


def test_one_changed_value_changes_it() -> None:
    table = sample()
    expected = table_fingerprint(table)
    names = table["name"].to_pylist()
    names[1234] = "name X"
    assert table_fingerprint(table.set_column(1, "name", pa.array(names))) != expected
    assert table_fingerprint(table.slice(1)) != expected  # one row fewer
    renamed = table.rename_columns(["id", "label", "amount", "score", "ok", "day", "at"])
    assert table_fingerprint(renamed) != expected  # a column's name is content too
    duplicated = pa.concat_tables([table, table.slice(0, 1)])
    assert table_fingerprint(duplicated) != expected  # a duplicate row counts


def test_null_and_empty_string_differ() -> None:
    assert table_fingerprint(pa.table({"s": ["a", None]})) != table_fingerprint(pa.table({"s": ["a", ""]}))
    assert table_fingerprint(pa.table({"x": [0, None]})) != table_fingerprint(pa.table({"x": [0, 0]}))


def test_nan_and_negative_zero_are_canonical() -> None:
    nan_a = pa.array([1.0, float("nan"), -0.0])
    # Another NaN bit pattern (negative, with a payload): the same value to every engine.
    other_nan = pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(bytes.fromhex("01000000000ff8ff"))])
    nan_b = pa.concat_arrays([pa.array([0.0]), other_nan, pa.array([1.0])])
    assert table_fingerprint(pa.table({"f": nan_a})) == table_fingerprint(pa.table({"f": nan_b}))
    # NaN is a value, not a null.
    assert table_fingerprint(pa.table({"f": nan_a})) != table_fingerprint(pa.table({"f": [1.0, None, 0.0]}))
    # Sort ties on -0.0 and 0.0 must not reorder the rest of the row.
    ties_a = pa.table({"f": [-0.0, 0.0], "s": ["b", "a"]})
    ties_b = pa.table({"f": [0.0, -0.0], "s": ["b", "a"]})
    assert table_fingerprint(ties_a) == table_fingerprint(ties_b)


def test_bytes_under_nulls_do_not_matter() -> None:
    """Engines leave anything under a null slot; the fingerprint sees only the values."""
    clean = pa.array([1, None, 3], pa.int64())
    values = pa.py_buffer((1).to_bytes(8, "little") + (99).to_bytes(8, "little") + (3).to_bytes(8, "little"))
    validity = pa.py_buffer(bytes([0b11111101]))  # bit 1 null, and garbage in the unused tail bits
    dirty = pa.Array.from_buffers(pa.int64(), 3, [validity, values], null_count=1)
    assert dirty.to_pylist() == clean.to_pylist()
    assert table_fingerprint(pa.table({"x": dirty})) == table_fingerprint(pa.table({"x": clean}))
    strings = pa.Array.from_buffers(pa.string(), 2, [pa.py_buffer(bytes([0b01])),
                                                     pa.py_buffer(pa.array([0, 1, 4], pa.int32()).buffers()[1]),
                                                     pa.py_buffer(b"abad")], null_count=1)
    assert strings.to_pylist() == ["a", None]
    assert table_fingerprint(pa.table({"s": strings})) == table_fingerprint(pa.table({"s": ["a", None]}))


def test_nested_values_and_empty_input() -> None:
    lists = pa.table({"k": [1, 2], "v": pa.array([[1, 2], None], pa.list_(pa.int32()))})
    assert table_fingerprint(lists) == table_fingerprint(
        pa.table({"v": pa.array([None, [1, 2]], pa.large_list(pa.int64())), "k": [2, 1]}))
    assert table_fingerprint(lists) != table_fingerprint(
        pa.table({"k": [1, 2], "v": pa.array([[2, 1], None], pa.list_(pa.int32()))}))
    # A nested column is not the same as a string column holding its JSON.
    assert table_fingerprint(lists) != table_fingerprint(pa.table({"k": [1, 2], "v": ["[1,2]", None]}))
    empty = sample().slice(0, 0)
    assert table_fingerprint(empty) == table_fingerprint(shuffled(sample()).slice(0, 0))
    assert table_fingerprint(empty) != table_fingerprint(pa.table({"id": pa.array([], pa.int64())}))


def test_refuses_what_it_cannot_fingerprint() -> None:
    with pytest.raises(FingerprintError):
        table_fingerprint(pa.table({"d": pa.array([1], pa.duration("s"))}))


@pytest.mark.slow  # ~1 s
def test_spills_when_the_data_exceed_the_memory_limit() -> None:
    n = 400_000
    table = pa.table({"id": pa.array(range(n)), "text": pa.array([f"{i:08d}" * 8 for i in range(n)])})
    assert table_fingerprint(shuffled(table), memory_limit="24MB", threads=1) == table_fingerprint(table)


@pytest.mark.slow
def test_same_rows_written_by_pyiceberg_and_delta_rs(tmp_path: Path) -> None:
    from deltalake import DeltaTable, write_deltalake
    from pyiceberg.catalog.sql import SqlCatalog

    table = sample().cast(pa.schema([
        ("id", pa.int64()), ("name", pa.large_string()), ("amount", pa.decimal128(12, 2)),
        ("score", pa.float64()), ("ok", pa.bool_()), ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC"))]))
    catalog = SqlCatalog("lakehouse", uri=f"sqlite:///{tmp_path}/catalog.db",
                         warehouse=(tmp_path / "iceberg").as_uri())
    catalog.create_namespace("ns")
    iceberg = catalog.create_table("ns.t", schema=table.schema)
    for part in (table.slice(0, 1000), table.slice(1000)):  # two data files, one snapshot each
        iceberg.append(part)
    columns = ["at", "name", "ok", "id", "amount", "score", "day"]
    write_deltalake(str(tmp_path / "delta"), shuffled(table).select(columns))
    from_iceberg = catalog.load_table("ns.t").scan().to_arrow()
    from_delta = DeltaTable(str(tmp_path / "delta")).to_pyarrow_table()
    assert from_iceberg.num_rows == from_delta.num_rows == table.num_rows
    expected = table_fingerprint(table)
    assert table_fingerprint(from_iceberg) == expected
    assert table_fingerprint(from_delta) == expected
    assert table_fingerprint(catalog.load_table("ns.t").scan().to_arrow_batch_reader()) == expected


def test_canonical_arrays_write_the_same_bytes() -> None:
    """The last step before the IPC writer: whatever an engine left under nulls is zeroed."""
    from lakehouse.fingerprint import _canonical_array

    def ipc(array: pa.Array) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, pa.schema([("x", array.type)])) as writer:
            writer.write_batch(pa.record_batch([array], names=["x"]))
        return sink.getvalue().to_pybytes()

    values = pa.py_buffer(b"".join(v.to_bytes(8, "little") for v in (1, 99, 3)))
    dirty = pa.Array.from_buffers(pa.int64(), 3, [pa.py_buffer(bytes([0b11111101])), values], null_count=1)
    clean = pa.array([1, None, 3], pa.int64())
    assert ipc(dirty) != ipc(clean)
    assert ipc(_canonical_array(dirty, pa.int64())) == ipc(_canonical_array(clean, pa.int64()))
    flags = pa.Array.from_buffers(pa.bool_(), 2, [pa.py_buffer(bytes([0b01])), pa.py_buffer(bytes([0b11111111]))],
                                  null_count=1)
    assert ipc(_canonical_array(flags, pa.bool_())) == ipc(_canonical_array(pa.array([True, None]), pa.bool_()))
    sliced = pa.array(["a", None, "b", "c"]).slice(1)
    assert ipc(_canonical_array(sliced, pa.large_string())) == ipc(_canonical_array(
        pa.array([None, "b", "c"], pa.large_string()), pa.large_string()))
