"""The run page at 1,000,000 log lines: one run's log inserted in bulk (four phases, one with two
attempts), then the run page fetched by a signed-in viewer through Django's test Client: the page
with its tail (the last 500 lines), the phase- and attempt-filtered tails, a "load earlier"
window from the middle of the log, a live-tail poll, searches, and the whole log downloaded.
Each is the median server time of ``--repeat`` requests, with its query count, against a
baseline measured in the same run: the same page of a run with 100 log lines.

    .venv/bin/python benchmarks/run_log.py [--lines 1000000] [--repeat 15] [--backend sqlite|postgres]

Without ``--backend`` it measures SQLite, then PostgreSQL (a throwaway server), each in its own
process. The target is < 100 ms for the page with the tail at 1M lines.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import _common  # sets up sys.path and the environment; must come first

SPEC = """\
name: biglog
phases:
  - {name: extract, kind: python, config: {callable: sleep, args: {seconds: 0}}}
  - {name: transform, kind: python, config: {callable: sleep, args: {seconds: 0}}, depends_on: [extract]}
  - {name: load, kind: python, config: {callable: sleep, args: {seconds: 0}}, depends_on: [transform]}
  - {name: report, kind: python, config: {callable: sleep, args: {seconds: 0}}, depends_on: [load]}
"""
# (phase, attempt, share of the lines): extract's lines end 600,000 lines before the tail.
PLAN = (("extract", 1, 0.4), ("transform", 1, 0.1), ("transform", 2, 0.1), ("load", 1, 0.39), ("report", 1, 0.01))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--baseline-lines", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    if args.backend is None:
        for backend in ("sqlite", "postgres"):
            subprocess.run([sys.executable, __file__, "--backend", backend, "--lines", str(args.lines),
                            "--baseline-lines", str(args.baseline_lines), "--repeat", str(args.repeat)], check=True)
        return
    if args.backend == "postgres":
        with _common.servers():
            report(args)
    else:
        os.environ.pop("DATABASE_URL", None)
        import django
        from django.core.management import call_command

        django.setup()
        _common.say("migrating")
        call_command("migrate", verbosity=0)
        report(args)


def seed(lines: int, baseline_lines: int):
    """A viewer, the big run (``lines`` log lines) and the baseline run (``baseline_lines``)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from controlroom.models import Membership
    from runs.models import Phase, Run, RunStatus

    workspace, job, _ = _common.world(SPEC)
    viewer = get_user_model().objects.create_user(username="viewer", password="unused-viewer-password")  # noqa: S106
    Membership.objects.create(workspace=workspace, user=viewer, role="viewer")
    env = workspace.environments.get(name="dev")
    runs = []
    for total in (lines, baseline_lines):
        run = Run.objects.create(workspace=workspace, environment=env, job=job, job_version=job.current_version,
                                 trigger=Run.Trigger.API, created_by_label="bench", status=RunStatus.SUCCEEDED)
        phases = {name: Phase.objects.create(run=run, name=name, position=i, kind="python", state="succeeded")
                  for i, name in enumerate(("extract", "transform", "load", "report"))}
        seq = 0
        for name, attempt, share in PLAN:
            _common.say(f"run {run.pk}: {name} attempt {attempt}")
            count = max(1, round(total * share))
            claim = seq + 1
            _insert(connection.vendor, run.pk, phases[name].pk, claim, claim, "PHASE_CLAIMED",
                    f"{name} claimed (attempt {attempt})", f'{{"attempt": {attempt}}}')
            _insert(connection.vendor, run.pk, phases[name].pk, claim + 1, claim + count, "PHASE_LOG",
                    f"{name} batch ", "{}")
            seq = claim + count
            Phase.objects.filter(pk=phases[name].pk).update(attempt=attempt)
        Run.objects.filter(pk=run.pk).update(last_seq=seq)
        run.refresh_from_db()
        runs.append(run)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return workspace, viewer, runs


def _insert(vendor: str, run_id: int, phase_id: int, first: int, last: int, type_: str, message: str,
            payload: str) -> None:
    """Events ``first``..``last`` of a run in one INSERT … SELECT (a message per line: every 997th
    line says 'rows=997 slow', the rest 'rows=<n>'); one line per millisecond, ending now."""
    from django.db import connection

    text = f"'{message}' || g || ' rows=' || (g %% 997) || CASE WHEN g %% 997 = 0 THEN ' slow' ELSE '' END" \
        if type_ == "PHASE_LOG" else f"'{message}'"
    with connection.cursor() as cur:
        if vendor == "postgresql":
            cur.execute(
                "INSERT INTO runs_runevent (run_id, phase_id, seq, event_id, type, level, message, payload, ts) "
                f"SELECT %s, %s, g, gen_random_uuid(), %s, 'info', {text}, %s::jsonb, "
                "now() - (%s - g) * interval '1 millisecond' FROM generate_series(%s, %s) g",
                [run_id, phase_id, type_, payload, last, first, last])
        else:
            cur.execute(
                "INSERT INTO runs_runevent (run_id, phase_id, seq, event_id, type, level, message, payload, ts) "
                "WITH RECURSIVE c(g) AS (SELECT %s UNION ALL SELECT g + 1 FROM c WHERE g < %s) "
                f"SELECT %s, %s, g, lower(hex(randomblob(16))), %s, 'info', {text}, %s, "
                "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || ((%s - g) / 1000.0) || ' seconds') FROM c",
                [first, last, run_id, phase_id, type_, payload, last])


def timed(client, url: str, repeat: int) -> tuple[float, int, int]:
    """(median ms, queries, response bytes) of GET ``url``."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    assert response.status_code in (200, 286), (url, response.status_code)
    reset_queries()  # each request empties the log: the context must start from an empty one
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    count = len(queries.captured_queries)  # read now: the next request empties the log
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(url)
        times.append(time.perf_counter() - start)
    return 1000 * _common.median(times), count, len(response.content)


def print_plans(run) -> None:
    """How the database reads each window of the big run (the index it uses)."""
    from django.http import QueryDict

    from runs import log_selectors
    from runs.models import EventType, RunEvent

    phases = list(run.phases.all())
    attempts = log_selectors.log_attempts(phases=phases)
    print("  plans of the windows at 1M lines:")
    for query in ("", "phase=extract", "phase=transform&attempt=1", "attempt=1", "attempt=2"):
        log_filter, _ = log_selectors.log_filter_parse(phases=phases, query=QueryDict(query))
        events = log_selectors.log_events(run=run, log_filter=log_filter, attempts=attempts, phases=phases)
        plan = events.order_by("-seq").values_list("seq", "ts", "level", "type", "phase_id", "message")[:501].explain()
        print(f"    {query or '(tail)':<28} {_plan_summary(plan)}")
    claims = RunEvent.objects.filter(phase_id__in=[p.pk for p in phases], type=EventType.PHASE_CLAIMED)
    print(f"    {'attempt starts (claims)':<28} {_plan_summary(claims.order_by('phase_id', 'seq').explain())}")


def _plan_summary(plan: str) -> str:
    steps = [line.strip().lstrip("->").strip().lstrip("0123456789 ") for line in plan.splitlines()]
    keep = [step.split("  (")[0] for step in steps if "Scan" in step or "SCAN" in step or "SEARCH" in step
            or "Sort" in step or "B-TREE" in step]
    return "; ".join(keep)[:150]


def report(args: argparse.Namespace) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test Client's host name is allowed
    start = time.perf_counter()
    workspace, viewer, (big, small) = seed(args.lines, args.baseline_lines)
    seeded = time.perf_counter() - start
    client = Client()
    client.force_login(viewer)

    def page(run, query: str = "") -> str:
        return f"/w/{workspace.slug}/runs/{run.pk}/" + (f"?{query}" if query else "")

    def log(run, query: str) -> str:
        return f"/w/{workspace.slug}/runs/{run.pk}/log/?{query}"

    middle = big.last_seq // 2
    cases = [
        ("page, tail (no filter)", page(big), page(small)),
        ("page, phase=extract (ends 600k lines before the tail)", page(big, "phase=extract"),
         page(small, "phase=extract")),
        ("page, phase=transform&attempt=1", page(big, "phase=transform&attempt=1"),
         page(small, "phase=transform&attempt=1")),
        ("page, attempt=1 (every phase)", page(big, "attempt=1"), page(small, "attempt=1")),
        ("page, attempt=2 (transform's, 400k lines before the tail)", page(big, "attempt=2"), page(small, "attempt=2")),
        (f"load earlier, before={middle}", log(big, f"before={middle}"), log(small, "before=50")),
        ("load earlier, phase=extract, before=200000", log(big, "phase=extract&before=200000"),
         log(small, "phase=extract&before=20")),
        ("live-tail poll, nothing new", log(big, f"after={big.last_seq}"), log(small, f"after={small.last_seq}")),
        ("search q=slow (1 line in 997)", page(big, "q=slow"), page(small, "q=slow")),
        ("search q=rows=5 (1 in ~90)", page(big, "q=rows%3D5"), page(small, "q=rows%3D5")),
        ("search, phase=extract, q=slow", page(big, "phase=extract&q=slow"), page(small, "phase=extract&q=slow")),
        ("search q=absent (no match: scans all)", page(big, "q=absent"), page(small, "q=absent")),
    ]
    print(f"run page log on {connection.vendor}: {args.lines:,} log lines in one run (seeded in {seeded:.1f} s), "
          f"baseline a run of {args.baseline_lines} lines; viewer, median of {args.repeat} requests, "
          f"{os.cpu_count()} CPUs")
    print(f"  {'request':<58} {'ms':>8} {'queries':>8} {'baseline ms':>12} {'ratio':>7}  KB")
    for index, (label, url, baseline_url) in enumerate(cases):
        _common.say(f"{label} ({index + 1}/{len(cases)})")
        repeat = args.repeat if "absent" not in label else max(3, args.repeat // 5)
        ms, queries, size = timed(client, url, repeat)
        base_ms, _, _ = timed(client, baseline_url, repeat)
        print(f"  {label:<58} {ms:8.1f} {queries:8d} {base_ms:12.1f} {ms / base_ms:6.2f}x {size // 1024:4d}")
    print_plans(big)
    _common.say("downloading the whole log")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    response = client.get(f"/w/{workspace.slug}/runs/{big.pk}/log/download/")
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _common.say("")
    print(f"  download, whole log: {lines:,} lines, {size / 1e6:.1f} MB in {seconds:.2f} s "
          f"({lines / seconds:,.0f} lines/s); peak RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB")
    print("  ratio = time at the big run / the same request at the baseline run")


if __name__ == "__main__":
    main()
