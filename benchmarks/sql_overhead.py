"""SQL editor overhead on a real Trino: the same query submitted through the Control Room (submit,
the worker's run, rows streamed into Parquet in the artifact store, result ready) and fetched with
the bare trino DB-API, in the same run, alternating, median of N. Prints both times and their
ratio (target for the large result: at most 1.2).

The worker's part runs in this process (the Celery wake-up, ~50 ms median on Redis, is measured
by enqueue_latency.py and not included here).

    .venv/bin/python benchmarks/sql_overhead.py [--repeat 3] [--large-rows 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # sets up sys.path and the environment; must come first

QUERIES = {
    "small": "SELECT * FROM tpch.tiny.nation",
    "large": "SELECT orderkey, partkey, quantity, extendedprice, shipdate FROM tpch.sf1.lineitem LIMIT {rows}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with _common.servers():
        from controlroom.access import Access
        from controlroom.models import Role

        workspace, _, user = _common.world()
        workspace.sql_row_cap = max(workspace.sql_row_cap, args.large_rows)
        workspace.save()
        access = Access(workspace=workspace, role=Role.ANALYST, user=user)
        with _common.trino_connection(workspace) as (server, connection):
            report(args, server, connection, access)


def report(args, server, connection, access) -> None:
    from sqlwarehouse.execution import query_execute, query_submit
    from tests.trino_server import trino_connect

    def control_room(sql: str) -> tuple[float, int]:
        began = time.perf_counter()
        execution = query_submit(access=access, connection=connection, sql=sql)
        query_execute(execution_id=execution.pk)
        execution.refresh_from_db()
        assert execution.status == "succeeded", execution.error
        return time.perf_counter() - began, execution.row_count

    def bare(sql: str) -> tuple[float, int]:
        began = time.perf_counter()
        with trino_connect(server.credentials_url, user=f"{access.user.username}~ro", ca_file=server.ca_file) as conn:
            cursor = conn.cursor()
            cursor.execute(sql)
            rows = 0
            while batch := cursor.fetchmany(50_000):
                rows += len(batch)
        return time.perf_counter() - began, rows

    print(f"SQL overhead on Trino: median of {args.repeat}, alternating, same run")
    for label, template in QUERIES.items():
        sql = template.format(rows=args.large_rows)
        bare(sql), control_room(sql)  # warm both paths (plans, JIT, connections)
        times: dict[str, list[float]] = {"bare": [], "cr": []}
        rows = {}
        for i in range(args.repeat):
            _common.say(f"{label}: round {i + 1}/{args.repeat}")
            for name, fn in (("bare", bare), ("cr", control_room)) if i % 2 == 0 else (("cr", control_room),
                                                                                      ("bare", bare)):
                seconds, rows[name] = fn(sql)
                times[name].append(seconds)
        _common.say("")
        b, c = statistics.median(times["bare"]), statistics.median(times["cr"])
        print(f"  {label:5} ({rows['cr']:>9,} rows)  bare DB-API {b:8.3f} s   Control Room {c:8.3f} s   "
              f"ratio {c / b:5.2f}" + ("   (target <= 1.2)" if label == "large" else ""))


if __name__ == "__main__":
    main()
