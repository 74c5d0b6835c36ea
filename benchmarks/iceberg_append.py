"""Iceberg append: N rows (1M by default) written by an ``iceberg`` phase, from claim to complete
(source read, table created, append committed under the lease, snapshot recorded),
against bare PyIceberg (``read_table`` of the same Parquet file, then ``create_table`` +
``table.append``) into the same kind of catalog (embedded SQLite catalog, files on local disk), in
the same process and run. Rounds alternate between the two; the first is a warm-up.

Two cases: a new table each round, and appends to one growing table. The version's canonical
fingerprint is computed after ``complete`` by the task ``lakehouse.tasks.table_version_fingerprint``
(on another worker in production): here its messages are held and run after each phase, timed on
their own line (for the growing table it reads the whole table back, so its cost grows with the
table). ``--profile`` adds a cProfile of one phase run of each case.

    .venv/bin/python benchmarks/iceberg_append.py [--rows 1000000] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first

SOURCE_SQL = """
    SELECT i::BIGINT AS id, 'customer ' || (i % 100003) AS name, (i % 1000)::DOUBLE / 7 AS amount,
           (i % 97)::INTEGER AS qty, i % 2 = 0 AS ok,
           TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at
    FROM range({rows}) t(i)"""


def spec_for(table: str, index: int) -> str:
    return (f"name: bench-iceberg-{index}\nphases:\n  - name: load\n    kind: iceberg\n"
            f"    config: {{table: {table}, file: bench.parquet}}\n")


HELD: list[int] = []  # the fingerprint task's messages, held until the phase completed


def phase_run(workspace, job) -> tuple[float, float, dict, float]:
    """(run_create wall seconds, claim→complete seconds, the phase's output, seconds of the
    fingerprint task run after it) of one run of ``job``."""
    from controlroom.access import system_access
    from lakehouse.models import TableVersion
    from lakehouse.tasks import table_version_fingerprint
    from runs.models import RunStatus
    from runs.services.runs import run_create

    started = time.perf_counter()
    run = run_create(access=system_access(workspace), job=job)
    wall = time.perf_counter() - started
    run.refresh_from_db()
    if run.status != RunStatus.SUCCEEDED:
        raise SystemExit(f"run {run.pk} ended {run.status}: {[p.error for p in run.phases.all()]}")
    phase = run.phases.get()
    started = time.perf_counter()
    while HELD:
        table_version_fingerprint(HELD.pop(0))
    deferred = time.perf_counter() - started
    if TableVersion.objects.filter(run=run, fingerprint="").exists():
        raise SystemExit(f"run {run.pk}: the fingerprint task left a version without its fingerprint")
    return wall, (phase.finished_at - phase.started_at).total_seconds(), phase.output, deferred


def bare_append(catalog, table: str, path: Path) -> tuple[float, float]:
    """(read seconds, create-or-load + append seconds) of bare PyIceberg."""
    import pyarrow.parquet as pq
    from pyiceberg.exceptions import NoSuchTableError

    started = time.perf_counter()
    data = pq.read_table(path)
    read = time.perf_counter() - started
    try:
        tbl = catalog.load_table(table)
    except NoSuchTableError:
        catalog.create_namespace_if_not_exists(table.split(".")[0])
        tbl = catalog.create_table(table, schema=data.schema)
    tbl.append(data)
    return read, time.perf_counter() - started - read


def profiled(workspace, job, top: int = 30) -> str:
    profile = cProfile.Profile()
    profile.enable()
    phase_run(workspace, job)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(
        r"lakehouse/|pyiceberg/table/|pyiceberg/io/pyarrow|pyiceberg/catalog/|duckdb|runs/services/", top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import django

    django.setup()
    import duckdb
    from django.conf import settings
    from django.core.management import call_command
    from pyiceberg.catalog.sql import SqlCatalog

    from connections.models import Connection
    from controlroom.celery import app as celery_app
    from runs.services.jobs import job_create
    from sqlwarehouse.datasets import datasets_area

    _common.say("migrating")
    call_command("migrate", verbosity=0)
    celery_app.conf.task_always_eager = True
    from lakehouse.tasks import table_version_fingerprint

    table_version_fingerprint.delay = HELD.append  # run after complete, as another worker would
    workspace, _, _ = _common.world()
    Connection.objects.create(workspace=workspace, name="warehouse", kind=Connection.Kind.DUCKDB,
                              config={"database": "warehouse.duckdb"})
    from controlroom.access import system_access

    access = system_access(workspace)
    source = datasets_area(workspace) / "bench.parquet"
    _common.say(f"writing {args.rows:,} rows to {source.name}")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"COPY ({SOURCE_SQL.format(rows=args.rows)}) TO '{source}' (FORMAT PARQUET)")
    con.close()
    scratch = Path(os.environ["CONTROLROOM_DATA_DIR"]) / "bare-lake"
    (scratch / "warehouse").mkdir(parents=True)
    bare = SqlCatalog("bare", uri=f"sqlite:///{scratch / 'catalog.db'}", warehouse=(scratch / "warehouse").as_uri())

    jobs = iter(range(1, 1_000_000))
    results: dict[str, dict[str, list[float]]] = {}
    grow_job = job_create(access=access, spec_text=spec_for("bench.grow", next(jobs)))
    profiles = []
    for case in ("new table", "growing table"):
        got = results.setdefault(case, {"wall": [], "phase": [], "read": [], "append": [], "fingerprint": []})
        for i in range(args.rounds + 1):  # round 0 warms caches and is not counted
            _common.say(f"{case}: round {i}/{args.rounds}")
            if case == "new table":
                job = job_create(access=access, spec_text=spec_for(f"bench.t{i}", next(jobs)))
                bare_table = f"bare.t{i}"
            else:
                job, bare_table = grow_job, "bare.grow"
            read, append = bare_append(bare, bare_table, source)
            wall, phase_s, output, fingerprint_s = phase_run(workspace, job)
            rows = output["tables"][0]["rows"]
            if i == 0:  # (for the growing table, this first append creates it)
                continue
            for key, value in (("wall", wall), ("phase", phase_s), ("read", read), ("append", append),
                               ("table rows", rows), ("fingerprint", fingerprint_s)):
                got.setdefault(key, []).append(value)
        if args.profile:
            _common.say(f"{case}: profiling one phase run")
            job = (job_create(access=access, spec_text=spec_for("bench.profiled", next(jobs)))
                   if case == "new table" else grow_job)
            profiles.append((case, profiled(workspace, job)))
    _common.say("")

    print(f"Iceberg append: {args.rows:,} rows x 6 columns from a Parquet dataset "
          f"({source.stat().st_size / 1e6:.0f} MB), embedded SQLite catalog on local disk, "
          f"control plane on {settings.DATABASES['default']['ENGINE'].split('.')[-1]}, {args.rounds} rounds")
    for case, got in results.items():
        bare_total = [r + a for r, a in zip(got["read"], got["append"], strict=True)]
        phase_med, wall_med = statistics.median(got["phase"]), statistics.median(got["wall"])
        bare_med, append_med = statistics.median(bare_total), statistics.median(got["append"])
        print(f"{case}:")
        if case == "growing table":
            print(f"  table rows after each counted append   {', '.join(f'{n:,}' for n in got['table rows'])}")
            print(f"  phase claim → complete, each round     {', '.join(f'{s:.2f} s' for s in got['phase'])}")
            print(f"  bare read + append, each round         {', '.join(f'{s:.2f} s' for s in bare_total)}")
        print(f"  bare pq.read_table + PyIceberg append  median {bare_med:6.2f} s "
              f"(append alone {append_med:.2f} s, {args.rows / append_med:,.0f} rows/s)")
        print(f"  iceberg phase, claim → complete        median {phase_med:6.2f} s "
              f"({args.rows / phase_med:,.0f} rows/s; run_create wall {wall_med:.2f} s)")
        print(f"  ratio phase / bare                     {phase_med / bare_med:6.2f}x  (target ≤ 1.2; "
              f"vs append alone {phase_med / append_med:.2f}x)")
        print(f"  fingerprint task, after complete       median {statistics.median(got['fingerprint']):6.2f} s "
              "(off the phase: another worker, later)")
    for case, text in profiles:
        print(f"\nprofile of one phase run, {case} (cumulative):\n{text}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
