"""Control-plane overhead of a run: the demo medallion job through Control Room (claims,
events, audit, artifact registration; tasks in-process) against the same SQL statements run
directly on DuckDB, in the same process and run. Prints both times and their ratio.

    CONTROLROOM_DATA_DIR=$(mktemp -d) .venv/bin/python benchmarks/run_overhead.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CONTROLROOM_DATA_DIR", tempfile.mkdtemp(prefix="cr-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlroom.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from controlroom.access import system_access  # noqa: E402
from controlroom.celery import app as celery_app  # noqa: E402
from controlroom.models import Workspace  # noqa: E402
from runs.models import Job, RunStatus  # noqa: E402
from runs.services.runs import run_create  # noqa: E402
from runs.spec import phases_of  # noqa: E402
from sqlwarehouse.datasets import datasets_area  # noqa: E402
from sqlwarehouse.engines import DuckDBEngine  # noqa: E402


def bare_duckdb(spec: dict, params: dict, scratch: Path) -> float:
    engine = DuckDBEngine(database=scratch / "bare.duckdb", read_only=False,
                          allowed_dirs=[datasets_area("demo"), scratch])
    start = time.perf_counter()
    for phase in phases_of(spec):
        config = phase.config
        if phase.kind != "sql":
            table = config["args"]["table"]
            engine.execute(f"SELECT count(*) FROM {table}")
            continue
        sql = config["sql"]
        if "table" in config:
            engine.execute(f"CREATE OR REPLACE TABLE {config['table']} AS {sql}", parameters=params)
        else:
            target = {**params, "t": str(scratch / "o.csv")}
            engine.execute(f"COPY ({sql}) TO $t (FORMAT CSV, HEADER)", parameters=target)
    return time.perf_counter() - start


def controlroom_run(workspace: Workspace, job: Job) -> float:
    start = time.perf_counter()
    run = run_create(access=system_access(workspace), job=job)
    run.refresh_from_db()
    if run.status != RunStatus.SUCCEEDED:
        raise SystemExit(f"run {run.pk} ended {run.status}: {run.error}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    with open(os.devnull, "w") as devnull:
        call_command("seed_demo", verbosity=0, stdout=devnull)
    celery_app.conf.task_always_eager = True
    workspace = Workspace.objects.get(slug="demo")
    job = Job.objects.get(workspace=workspace, slug="medallion")
    params = {"source_file": "orders.csv", "min_amount": 0, "datasets_dir": str(datasets_area("demo")),
              "run_id": 0}
    scratch = Path(tempfile.mkdtemp(prefix="cr-bare-"))
    cr, bare = [], []
    for i in range(args.runs + 1):  # the first round warms caches and is not counted
        b = bare_duckdb(job.current_version.spec, params, scratch)
        c = controlroom_run(workspace, job)
        if i:
            bare.append(b)
            cr.append(c)
        print(f"\rround {i}/{args.runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    cr_med, bare_med = statistics.median(cr), statistics.median(bare)
    print(f"medallion job, {args.runs} runs, 5 phases each, {settings.DATABASES['default']['ENGINE'].split('.')[-1]}")
    print(f"  bare DuckDB statements   median {bare_med * 1000:8.1f} ms")
    p90 = sorted(cr)[max(0, int(len(cr) * 0.9) - 1)]
    per_phase = 1000 * (cr_med - bare_med) / 5
    print(f"  Control Room run         median {cr_med * 1000:8.1f} ms  (p90 {p90 * 1000:.1f} ms)")
    print(f"  ratio                    {cr_med / bare_med:8.2f}x  (overhead {per_phase:.1f} ms per phase)")


if __name__ == "__main__":
    main()
