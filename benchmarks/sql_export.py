"""Export of a big stored result: 5,000,000 tpch rows run through Trino, stored by the worker as
Parquet, then exported as CSV and as Parquet by the web server's view, each step in a fresh
process (tests/rss_probe.py) so its peak RSS is its own. Prints rows/s and peak RSS per step,
and the RSS of a process that only imported the same modules (the floor).

    .venv/bin/python benchmarks/sql_export.py [--rows 5000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _common  # sets up sys.path and the environment; must come first


def probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.rss_probe", *args], cwd=_common.REPO, env=dict(os.environ),
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    with _common.servers():
        from controlroom.access import Access
        from controlroom.models import Role
        from sqlwarehouse.execution import query_submit

        workspace, _, user = _common.world()
        workspace.sql_row_cap = args.rows
        workspace.save()
        with _common.trino_connection(workspace) as (_, connection):
            execution = query_submit(access=Access(workspace=workspace, role=Role.ANALYST, user=user),
                                     connection=connection,
                                     sql="SELECT orderkey, partkey, quantity, extendedprice, shipdate "
                                         f"FROM tpch.sf1.lineitem LIMIT {args.rows}")
            _common.say(f"worker: running and storing {args.rows:,} rows")
            stored = probe("execute", str(execution.pk))
            execution.refresh_from_db()
            assert execution.row_count == args.rows, execution.error
            results = [("worker: Trino -> Parquet", stored)]
            for fmt in ("csv", "parquet"):
                _common.say(f"server: exporting {fmt}")
                results.append((f"server: export {fmt}", probe("export", str(execution.pk), fmt)))
            _common.say("")
            floor = probe("floor", "0")
    print(f"SQL result export: {args.rows:,} rows of tpch.sf1.lineitem (5 columns), stored Parquet "
          f"{execution.manifest['bytes'] / 1e6:.0f} MB")
    for label, r in results:
        print(f"  {label:26} {r['seconds']:7.2f} s  {args.rows / r['seconds']:>11,.0f} rows/s  "
              f"{r['bytes'] / 1e6:7.0f} MB out  peak RSS {r['peak_rss_mb']:6.1f} MB")
    print(f"  {'floor (imports only)':26} peak RSS {floor['peak_rss_mb']:6.1f} MB")


if __name__ == "__main__":
    main()
