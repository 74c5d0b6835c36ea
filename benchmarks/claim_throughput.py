"""Claim throughput on PostgreSQL: queued phases drained by concurrent executor processes that
each loop phase_claim_next + phase_complete through the service layer, against a bare psycopg
loop (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1 + UPDATE) over a fresh copy of the same table,
in the same run. Prints phases/s for both, their ratio (target >= 0.5), and checks that every
phase was claimed exactly once.

    .venv/bin/python benchmarks/claim_throughput.py [--phases 3000] [--per-run 100] [--workers 8]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import time
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first

BARE_TABLE = "bench_bare_phase"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", type=int, default=3_000, help="the issue's full size is 10000")
    parser.add_argument("--per-run", type=int, default=100,
                        help="phases per run (1: every completion also ends its run)")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with _common.servers() as env:
        report(args, env["DATABASE_URL"])


def report(args: argparse.Namespace, database_url: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.models import EventType, Phase, Run, RunEvent
    from runs.services import pgclaim
    from runs.services.admission import runs_admit
    from runs.services.leases import phase_claim_next
    from runs.services.phases import phase_complete

    workspace, job, _ = _common.world()
    runs = max(1, args.phases // args.per_run)
    _common.say(f"queueing {runs * args.per_run} phases")
    _common.queue_phases(workspace, job, runs=runs, per_run=args.per_run)
    total = runs * args.per_run
    _common.copy_phase_table(BARE_TABLE)

    def bare(i: int) -> int:
        return _common.bare_claim_loop(database_url, BARE_TABLE)

    bare_s, bare_n = _common.drain(bare, args.workers, poll=lambda: "bare psycopg loop draining")

    def service(i: int) -> int:
        done = 0
        while (got := phase_claim_next(workspace=workspace, worker=f"bench-{os.getpid()}", kinds=["python"])):
            phase_complete(phase=got[0], lease_token=got[1], succeeded=True)
            done += 1
        return done

    waits: collections.Counter[str] = collections.Counter()
    samples = [0]

    def poll() -> str:
        with connection.cursor() as cur:
            cur.execute("SELECT CASE WHEN state <> 'active' THEN state ELSE coalesce(wait_event_type || ':' || "
                        "wait_event, 'on CPU') END, CASE WHEN wait_event_type = 'Lock' THEN query ELSE '' END "
                        "FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' "
                        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
            for state, query in cur.fetchall():  # a lock wait is labelled with the table its statement names
                table = re.search(r'(?:UPDATE|FROM) "(\w+)"', query) or re.match(r'SELECT "(\w+)"\.', query)
                waits[f"{state} ({table.group(1)})" if table else state] += 1
        samples[0] += 1
        left = Phase.objects.filter(state="pending").count()
        return f"service layer draining: {total - left}/{total}"

    svc_s, svc_n = _common.drain(service, args.workers, poll=poll)

    # Statements of one claim + complete in a steady state (not timed): one more run is queued
    # and admitted, one of its phases goes through, then the run is deleted again. The
    # one-statement PostgreSQL paths bypass Django's cursor, so they are counted at their call.
    [probe_run] = _common.queue_phases(workspace, job, runs=1, per_run=args.per_run)
    runs_admit(workspace_id=workspace.pk)
    direct = [0]
    execute = pgclaim._execute

    def counted(sql: str, params: dict) -> object:
        direct[0] += 1
        return execute(sql, params)

    pgclaim._execute = counted
    with CaptureQueriesContext(connection) as probe:
        phase, token = phase_claim_next(workspace=workspace, worker="probe", kinds=["python"])
        phase_complete(phase=phase, lease_token=token, succeeded=True)
    pgclaim._execute = execute
    probe_queries, probe_ended_run = len(probe) + direct[0], Run.objects.get(pk=probe_run).is_terminal
    Run.objects.filter(pk=probe_run).delete()

    serial_lines = serial(workspace, job, database_url, args.per_run)
    rows, wrong = _common.claimed_once("runs_phase")
    claims = RunEvent.objects.filter(type=EventType.PHASE_CLAIMED).count()
    bare_rows, bare_wrong = _common.claimed_once(BARE_TABLE)
    unfinished = Run.objects.exclude(status="succeeded").count()

    bare_rate, svc_rate = bare_n / bare_s, svc_n / svc_s
    print(f"claim throughput on PostgreSQL: {total} phases ({runs} runs x {args.per_run}), "
          f"{args.workers} executor processes, {os.cpu_count()} CPUs")
    print(f"  bare psycopg SKIP LOCKED + UPDATE   {bare_rate:8.0f} phases/s  ({bare_n} in {bare_s:.1f} s)")
    print(f"  phase_claim_next + phase_complete   {svc_rate:8.0f} phases/s  ({svc_n} in {svc_s:.1f} s)")
    print(f"  ratio (service / bare)              {svc_rate / bare_rate:8.2f}   (target >= 0.5)")
    print(f"  statements per claim + complete     {probe_queries:8d}   "
          f"({'including' if probe_ended_run else 'not including'} ending the run)")
    verdict = "yes" if wrong == 0 and rows == total and claims == total else "NO"
    print(f"  every phase claimed exactly once    {verdict:>8}   ({rows} phases, {wrong} with attempt != 1 or not "
          f"succeeded, {claims} PHASE_CLAIMED events; bare copy: {bare_wrong} of {bare_rows} wrong)")
    print(f"  runs not succeeded after the drain  {unfinished:8d}")
    print(*serial_lines, sep="\n")
    if samples[0]:
        top = ", ".join(f"{name} {count / samples[0]:.1f}" for name, count in waits.most_common(8))
        print(f"  executor backends by state / wait event (mean over {samples[0]} samples): {top}")


def backend_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a local process (a PostgreSQL backend), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serial(workspace, job, database_url: str, per_run: int, phases: int = 3000) -> list[str]:
    """One process, one connection, no contention: CPU per phase in the client and in its
    PostgreSQL backend, for both loops. The queue is deleted again afterwards."""
    import psycopg
    from django.db import connection

    from runs.models import Run
    from runs.services.leases import phase_claim_next
    from runs.services.phases import phase_complete

    _common.say("serial pass")
    made = _common.queue_phases(workspace, job, runs=max(1, phases // per_run), per_run=per_run)
    table = BARE_TABLE + "_serial"
    _common.copy_phase_table(table, where=f"run_id = ANY(ARRAY{made})")
    lines = [f"  one process, {len(made) * per_run} phases   wall/phase  client CPU  server CPU"]
    with psycopg.connect(database_url) as conn:
        pid, cpu, start = conn.info.backend_pid, time.process_time(), time.monotonic()
        server = backend_cpu_s(pid)
        done = _common.bare_claim_loop(database_url, table, conn=conn)
        lines.append(_serial_line("bare loop", done, start, cpu, backend_cpu_s(pid) - server))
    connection.ensure_connection()
    pid, cpu, start = connection.connection.info.backend_pid, time.process_time(), time.monotonic()
    server, done = backend_cpu_s(pid), 0
    while got := phase_claim_next(workspace=workspace, worker="serial", kinds=["python"]):
        phase_complete(phase=got[0], lease_token=got[1], succeeded=True)
        done += 1
    lines.append(_serial_line("service layer", done, start, cpu, backend_cpu_s(pid) - server))
    Run.objects.filter(pk__in=made).delete()
    _common.say("")
    return lines


def _serial_line(label: str, done: int, start: float, cpu: float, server_s: float) -> str:
    per = lambda seconds: f"{seconds / max(done, 1) * 1e3:8.3f} ms"  # noqa: E731
    return f"  {label:<30} {per(time.monotonic() - start)} {per(time.process_time() - cpu)} {per(server_s)}"


if __name__ == "__main__":
    main()
