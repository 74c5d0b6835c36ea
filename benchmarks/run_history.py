"""Run history page at scale: 100,000 runs (bulk-inserted, spread over ~100 days, five jobs,
three environments, a few failed) in one workspace on PostgreSQL; the runs page
/w/<ws>/runs/ is fetched by a signed-in viewer through Django's test Client. For page 1, a
deep page (the keyset cursor of page 1000, i.e. runs 49,951-50,000) and some filters it prints
the median server time, the query count, and the same page's main SELECT run bare on psycopg
(the baseline: what the database alone costs), with the ratio.

    .venv/bin/python benchmarks/run_history.py [--runs 100000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import _common  # sets up sys.path and the environment; must come first

JOBS = ("ingest", "clean", "model", "report", "export")
PAGE = 50


def seed(runs: int):
    from django.contrib.auth import get_user_model
    from django.db import connection

    from controlroom.access import system_access
    from controlroom.models import Membership
    from runs.models import Run, RunStatus
    from runs.services.jobs import job_create

    workspace, first, _ = _common.world(_common.TICK_SPEC.replace("name: tick", f"name: {JOBS[0]}", 1))
    jobs = [first] + [job_create(access=system_access(workspace), spec_text=_common.TICK_SPEC.replace(
        "name: tick", f"name: {name}", 1)) for name in JOBS[1:]]
    envs = list(workspace.environments.order_by("id"))
    viewer = get_user_model().objects.create_user(username="viewer", password="unused-viewer-password")  # noqa: S106
    Membership.objects.create(workspace=workspace, user=viewer, role="viewer")
    statuses = [RunStatus.FAILED if i % 97 == 0 else RunStatus.CANCELLED if i % 331 == 0 else RunStatus.SUCCEEDED
                for i in range(runs)]
    batch = 5000
    for start in range(0, runs, batch):
        _common.say(f"inserting runs {start}/{runs}")
        Run.objects.bulk_create([
            Run(workspace=workspace, environment=envs[i % 3], job=jobs[i % len(jobs)],
                job_version=jobs[i % len(jobs)].current_version, status=statuses[i], created_by_label="bench",
                trigger=Run.Trigger.SCHEDULE if i % 4 else Run.Trigger.API, last_seq=3)
            for i in range(start, min(runs, start + batch))])
    with connection.cursor() as cur:  # spread created_at over ~100 days, oldest first; 1-2 minute runs
        cur.execute("UPDATE runs_run SET created_at = now() - (%s - id) * interval '86 seconds'", [runs])
        cur.execute("UPDATE runs_run SET started_at = created_at + interval '2 seconds', "
                    "finished_at = created_at + (60 + id % 60) * interval '1 second'")
        cur.execute("VACUUM ANALYZE runs_run")
    return workspace, viewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--deep-page", type=int, default=1000)
    args = parser.parse_args()
    with _common.servers() as env:
        report(args, env["DATABASE_URL"])


def report(args: argparse.Namespace, database_url: str) -> None:
    import psycopg
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from runs.models import Run

    setup_test_environment()  # the test Client's host name is allowed
    workspace, viewer = seed(args.runs)
    client = Client()
    client.force_login(viewer)
    base = f"/w/{workspace.slug}/runs/"
    ids = Run.objects.filter(workspace=workspace).order_by("-id").values_list("id", flat=True)
    deep_offset = min(args.deep_page - 1, max(0, (args.runs - 1) // PAGE)) * PAGE
    deep_cursor = ids[deep_offset - 1] if deep_offset else None
    one_day = (dt.date.today() - dt.timedelta(days=60)).isoformat()
    cases = [
        ("page 1", ""),
        (f"page {deep_offset // PAGE + 1} (before=<cursor>)", f"before={deep_cursor}"),
        ("?page=1000 (no longer a parameter)", "page=1000"),
        ("status=failed", "status=failed"),
        ("status=cancelled, deep", f"status=cancelled&before={deep_cursor}"),
        ("job=report", "job=report"),
        ("environment=prod", "environment=prod"),
        (f"from/to one day, {one_day}", f"from={one_day}&to={one_day}"),
        ("status=running (none)", "status=running"),
    ]
    print(f"run history page on PostgreSQL: {args.runs} runs in one workspace, viewer, "
          f"median of {args.repeat} requests, {os.cpu_count()} CPUs")
    print(f"  {'page':<38} {'server ms':>10} {'queries':>8} {'runs SELECT ms':>15} {'ratio':>7} rows  plan")
    with psycopg.connect(database_url) as bare:
        for index, (label, query) in enumerate(cases):
            _common.say(f"{label} ({index + 1}/{len(cases)})")
            url = base + (f"?{query}" if query else "")
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            with CaptureQueriesContext(connection) as queries:
                client.get(url)
            captured = list(queries.captured_queries)  # read now: the next request resets the log
            main = next(q["sql"] for q in captured if q["sql"].startswith('SELECT "runs_run"."id"'))
            times, sql_times = [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                client.get(url)
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
                rows = len(bare.execute(main).fetchall())
                sql_times.append(time.perf_counter() - start)
            plan = [r[0] for r in bare.execute("EXPLAIN (ANALYZE, BUFFERS) " + main).fetchall()]
            scan = next((line.strip().split("  (")[0].lstrip("-> ") for line in plan if " on runs_run" in line), "?")
            page_ms, sql_ms = 1000 * _common.median(times), 1000 * _common.median(sql_times)
            print(f"  {label:<38} {page_ms:10.1f} {len(captured):8d} {sql_ms:15.2f} {page_ms / sql_ms:7.0f}x "
                  f"{rows:4d}  {scan[:60]}")
    _common.say("")
    print("  ratio = page time / its runs SELECT run bare on psycopg; plan = how that SELECT reads runs_run")


if __name__ == "__main__":
    main()
