"""The canonical table fingerprint (``lakehouse.fingerprint``): rows/s over N rows (10M by default)
against bare sha256 of the same table's Arrow IPC stream (no normalising, no sort), then proof
that it does not change under shuffled rows, reordered columns, other chunk and file sizes and
another writing engine (PyIceberg in several appends, delta-rs with small files, DuckDB Parquet in
one file and in many small ones), and that one row fewer changes it (the control). Exits 1 if any
of that does not hold. No server needed.

    .venv/bin/python benchmarks/fingerprint.py [--rows 10000000] [--memory-limit 1GB]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import tempfile
import time
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--memory-limit", default="1GB")
    args = parser.parse_args()
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lakehouse.fingerprint import table_fingerprint

    work = Path(tempfile.mkdtemp(prefix="cr-bench-fingerprint-"))
    wrong: list[str] = []
    try:
        _common.say(f"generating {args.rows:,} rows")
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        table = con.sql(f"""
            SELECT i::BIGINT AS id, 'customer ' || (i % 100003) AS name, (i % 1000)::DECIMAL(12, 2) / 7 AS amount,
                   CASE WHEN i % 13 = 0 THEN NULL ELSE (i % 997) / 3.0 END::DOUBLE AS score,
                   i % 2 = 0 AS ok, TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at
            FROM range({args.rows}) t(i)""").to_arrow_table()
        fingerprint = lambda data: table_fingerprint(data, memory_limit=args.memory_limit)  # noqa: E731
        print(f"table: {table.num_rows:,} rows, {len(table.column_names)} columns, "
              f"{table.nbytes / 1e6:.0f} MB in Arrow")

        _common.say("bare sha256 of the IPC stream")
        started = time.perf_counter()
        digest = hashlib.sha256()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue())
        bare_s = time.perf_counter() - started
        del sink

        _common.say("fingerprint")
        started = time.perf_counter()
        expected = fingerprint(table)
        fp_s = time.perf_counter() - started
        print(f"fingerprint (rows in id order): {fp_s:.2f} s, {table.num_rows / fp_s:,.0f} rows/s "
              f"(bare IPC sha256, unsorted: {bare_s:.2f} s, {table.num_rows / bare_s:,.0f} rows/s; "
              f"ratio {fp_s / bare_s:.1f}x); memory_limit {args.memory_limit}")

        checks: list[tuple[str, str]] = []
        con.register("bench", table)
        _common.say("shuffled rows")
        shuffled = con.sql("SELECT * FROM bench ORDER BY hash(id * 31 + 7)").to_arrow_table()
        started = time.perf_counter()
        checks.append(("shuffled rows", fingerprint(shuffled)))
        shuffled_s = time.perf_counter() - started
        print(f"fingerprint of the same rows shuffled: {shuffled_s:.2f} s, {table.num_rows / shuffled_s:,.0f} rows/s "
              f"(ratio to bare {shuffled_s / bare_s:.1f}x)")
        checks.append(("reordered columns", fingerprint(table.select(list(reversed(table.column_names))))))
        checks.append(("re-chunked (batches of 12,345 rows)", fingerprint(shuffled.to_batches(max_chunksize=12_345))))
        checks.append(("widened/narrowed types (name as dictionary, id as int64, at in ns)", fingerprint(
            table.set_column(1, "name", table["name"].dictionary_encode())
                 .set_column(5, "at", table["at"].cast(pa.timestamp("ns", tz="UTC"))))))
        del shuffled

        _common.say("PyIceberg: 4 appends")
        from pyiceberg.catalog.sql import SqlCatalog

        catalog = SqlCatalog("bench", uri=f"sqlite:///{work}/catalog.db", warehouse=(work / "iceberg").as_uri())
        catalog.create_namespace("bench")
        iceberg = catalog.create_table("bench.t", schema=table.schema)
        quarter = table.num_rows // 4 + 1
        for start in range(0, table.num_rows, quarter):
            iceberg.append(table.slice(start, quarter))
        reader = catalog.load_table("bench.t").scan().to_arrow_batch_reader()
        checks.append(("PyIceberg, 4 snapshots, read back as a stream", fingerprint(reader)))

        _common.say("delta-rs: shuffled, small files")
        from deltalake import DeltaTable, WriterProperties, write_deltalake

        shuffled = con.sql("SELECT * FROM bench ORDER BY hash(id * 17 + 3)").to_arrow_table()
        write_deltalake(str(work / "delta"), shuffled, target_file_size=max(table.nbytes // 20, 1 << 20),
                        writer_properties=WriterProperties(max_row_group_size=50_000))
        del shuffled
        delta = DeltaTable(str(work / "delta"))
        files = len(delta.file_uris())
        checks.append((f"delta-rs, shuffled, {files} files", fingerprint(
            delta.to_pyarrow_dataset().to_batches(batch_size=100_000))))

        _common.say("DuckDB Parquet")
        con.execute(f"COPY (SELECT name, id, ok, \"at\", score, amount FROM bench) TO '{work}/duck.parquet' "
                    "(FORMAT PARQUET, ROW_GROUP_SIZE 200000)")
        checks.append(("DuckDB Parquet, other column order", fingerprint(
            pq.ParquetFile(work / "duck.parquet").iter_batches(batch_size=65_000))))

        _common.say("DuckDB Parquet, small files")
        con.execute(f"COPY bench TO '{work}/duck_small' (FORMAT PARQUET, FILE_SIZE_BYTES '2MB', "
                    "ROW_GROUP_SIZE 20000)")
        import pyarrow.dataset as ds

        small = ds.dataset(work / "duck_small", format="parquet")
        checks.append((f"DuckDB Parquet, same rows in {len(small.files)} files instead of 1", fingerprint(
            small.to_batches(batch_size=40_000))))

        changed = table.slice(0, table.num_rows - 1)
        checks.append(("control: one row fewer (must differ)", fingerprint(changed)))
        _common.say("")
        print(f"fingerprint {expected}")
        wrong = []
        for name, value in checks:
            same = value == expected
            verdict = ("same" if same else "DIFFERENT")
            print(f"  {name:<70} {verdict}")
            if same == name.startswith("control"):
                wrong.append(name)
        print("invariance: " + (f"FAILED for {', '.join(wrong)}" if wrong else
                                f"all {len(checks) - 1} variants give the same fingerprint; the control differs"))
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
              f"(the table itself: {table.nbytes / 1e6:.0f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
