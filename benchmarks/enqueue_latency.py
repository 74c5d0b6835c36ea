"""Enqueue-to-start latency with an idle Celery worker on Redis: single-phase runs (a python
`sleep` of 0 s) are created one at a time with run_create; the latency of each is its phase's
PHASE_STARTED event time minus the run's created_at. A real `celery -A controlroom worker`
process on a real Redis broker and PostgreSQL does the work. Prints median and p99 against
the targets (median < 50 ms, p99 < 250 ms), and where the time goes.

    .venv/bin/python benchmarks/enqueue_latency.py [--runs 200] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

import _common  # sets up sys.path and the environment; must come first

POLL_S = 0.002
TIMEOUT_S = 60.0


@contextlib.contextmanager
def celery_worker(env: dict[str, str], concurrency: int):
    log_path = os.path.join(os.environ["CONTROLROOM_DATA_DIR"], "worker.log")
    log = open(log_path, "wb")
    cmd = [sys.executable, "-m", "celery", "-A", "controlroom", "worker", "--loglevel", "INFO", "--queues", "default",
           "--concurrency", str(concurrency), "--hostname", f"bench-{os.getpid()}@%h", "--without-gossip",
           "--without-mingle"]
    proc = subprocess.Popen(cmd, cwd=_common.REPO, env={**os.environ, **env, "LOG_LEVEL": "INFO"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    except BaseException:
        log.flush()
        with open(log_path, errors="replace") as tail:
            print("worker log, last lines:\n" + "".join(tail.readlines()[-30:]), file=sys.stderr)
        raise
    finally:
        proc.terminate()  # warm shutdown; the worker is idle by now
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def one_run(access, job, proc) -> dict[str, float]:
    """Create a run, wait until its phase starts and the run ends; timings in seconds."""
    from runs.models import EventType, Run, RunEvent
    from runs.services.runs import run_create

    began = time.monotonic()
    run = run_create(access=access, job=job)
    call_s = time.monotonic() - began
    deadline = began + TIMEOUT_S
    events: dict[str, object] = {}
    while True:
        rows = RunEvent.objects.filter(run_id=run.pk, type__in=[EventType.PHASE_CLAIMED, EventType.PHASE_STARTED])
        events = dict(rows.values_list("type", "ts"))
        if EventType.PHASE_STARTED in events:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"run {run.pk}: no PHASE_STARTED after {TIMEOUT_S:.0f} s (worker exit {proc.poll()})")
        time.sleep(POLL_S)
    while not Run.objects.get(pk=run.pk).is_terminal:  # the worker is idle again before the next run
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run.pk} did not end within {TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    created = Run.objects.values_list("created_at", flat=True).get(pk=run.pk)
    return {"call": call_s, "start": (events[EventType.PHASE_STARTED] - created).total_seconds(),
            "claim": (events[EventType.PHASE_CLAIMED] - created).total_seconds()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (2 as scripts/run.sh)")
    parser.add_argument("--pause", type=float, default=0.05, help="idle seconds between runs")
    args = parser.parse_args()
    with _common.servers(redis=True) as env, celery_worker(env, args.concurrency) as proc:
        from controlroom.access import system_access
        from runs.models import Run

        workspace, job, _ = _common.world()
        access = system_access(workspace)
        _common.say("waiting for the worker (first run)")
        for _ in range(args.warmup):
            one_run(access, job, proc)
        samples = []
        for i in range(args.runs):
            samples.append(one_run(access, job, proc))
            _common.say(f"run {i + 1}/{args.runs}")
            time.sleep(args.pause)
        _common.say("")
        failed = Run.objects.exclude(status="succeeded").count()

    start = [s["start"] * 1000 for s in samples]
    claim = [s["claim"] * 1000 for s in samples]
    gap = [(s["start"] - s["claim"]) * 1000 for s in samples]
    call = [s["call"] * 1000 for s in samples]
    med, p99 = _common.median(start), _common.pct(start, 99)
    print(f"enqueue-to-start latency: {args.runs} single-phase runs one at a time, idle Celery worker "
          f"(concurrency {args.concurrency}) on Redis, PostgreSQL, {os.cpu_count()} CPUs")
    print(f"  created_at -> PHASE_STARTED   median {med:7.1f} ms  p99 {p99:7.1f} ms  max {max(start):7.1f} ms"
          f"   (targets: median < 50, p99 < 250: {'met' if med < 50 and p99 < 250 else 'NOT met'})")
    for label, values in (("created_at -> PHASE_CLAIMED", claim), ("PHASE_CLAIMED -> STARTED", gap),
                          ("run_create call (client)", call)):
        print(f"  {label:<28}  median {_common.median(values):7.1f} ms  p99 {_common.pct(values, 99):7.1f} ms")
    print(f"  runs not succeeded            {failed:7d}")


if __name__ == "__main__":
    main()
