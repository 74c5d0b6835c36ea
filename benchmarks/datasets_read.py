"""Reading a workspace's dataset through the read-only ``datasets://`` file system (how every
phase and query reads input files now) vs. DuckDB reading the same file from an allowed local
directory (how they read before, writable): the same CSV, same query, alternating, median of N.
Prints both times and their ratio. No server needed.

    .venv/bin/python benchmarks/datasets_read.py [--rows 2000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import django

    django.setup()
    from sqlwarehouse.engines import DuckDBEngine

    work = Path(tempfile.mkdtemp(prefix="cr-bench-datasets-"))
    area = work / "area"
    area.mkdir()
    _common.say(f"writing {args.rows:,} rows of CSV")
    DuckDBEngine(database=work / "gen.duckdb", read_only=False, allowed_dirs=[area]).execute(
        f"COPY (SELECT range AS id, 'customer_' || (range % 1000) AS customer, range * 0.37 AS amount, "
        f"DATE '2026-01-01' + (range % 365)::INTEGER AS day FROM range({args.rows})) TO '{area}/orders.csv' (HEADER)")
    size_mb = (area / "orders.csv").stat().st_size / 1e6
    query = "SELECT customer, count(*), sum(amount) FROM read_csv('{}') GROUP BY customer"
    local = DuckDBEngine(database=work / "a.duckdb", read_only=False, allowed_dirs=[area])
    fenced = DuckDBEngine(database=work / "b.duckdb", read_only=False, allowed_dirs=[], datasets=area)
    bare, ours = [], []
    for i in range(args.repeat + 1):  # the first round warms the page cache and is not counted
        _common.say(f"round {i}/{args.repeat}")
        began = time.perf_counter()
        a = local.execute(query.format(f"{area}/orders.csv"), max_rows=2000).rows
        middle = time.perf_counter()
        b = fenced.execute(query.format("datasets:///orders.csv"), max_rows=2000).rows
        end = time.perf_counter()
        assert sorted((c, n, round(s)) for c, n, s in a) == sorted((c, n, round(s)) for c, n, s in b)
        if i:
            bare.append(middle - began)
            ours.append(end - middle)
    _common.say("")
    print(f"read_csv of {args.rows:,} rows ({size_mb:.0f} MB), group by, median of {args.repeat}")
    print(f"  local allowed directory   {statistics.median(bare) * 1000:8.1f} ms")
    print(f"  datasets:// (read-only)   {statistics.median(ours) * 1000:8.1f} ms")
    print(f"  ratio                     {statistics.median(ours) / statistics.median(bare):8.2f}")


if __name__ == "__main__":
    main()
