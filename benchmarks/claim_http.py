"""Claim throughput over HTTP: queued phases drained through /api/v1/ops/claim and
/api/v1/ops/phases/<id>/complete (bearer token) by client threads, against gunicorn serving
controlroom.wsgi on PostgreSQL; the bare psycopg SKIP LOCKED loop over a fresh copy of the same
table is the baseline, in the same run. Prints phases/s for both, the ratio, and checks that
every phase was claimed exactly once.

    .venv/bin/python benchmarks/claim_http.py [--phases 2000] [--per-run 100] [--clients 8]
        [--gunicorn-workers 2 --gunicorn-threads 4] [--conn-max-age 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import _common  # sets up sys.path and the environment; must come first

BARE_TABLE = "bench_bare_phase"


def post(url: str, token: str, body: dict) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our own 127.0.0.1 server)
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read()[:200].decode(errors="replace")}


@contextlib.contextmanager
def gunicorn(args: argparse.Namespace, env: dict[str, str]):
    from tests.servers import HOST, free_port

    port = free_port()
    log = open(os.path.join(os.environ["CONTROLROOM_DATA_DIR"], "gunicorn.log"), "wb")
    env = {**os.environ, **env, "DB_CONN_MAX_AGE": str(args.conn_max_age), "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "gunicorn", "controlroom.wsgi:application", "--bind", f"{HOST}:{port}",
           "--workers", str(args.gunicorn_workers), "--threads", str(args.gunicorn_threads)]
    proc = subprocess.Popen(cmd, cwd=_common.REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(base + "/healthz", timeout=2):  # noqa: S310
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("gunicorn did not come up:\n" + Path(log.name).read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
        proc.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", type=int, default=2_000, help="the issue's full size is 10000")
    parser.add_argument("--per-run", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--gunicorn-workers", type=int, default=2, help="as scripts/run.sh")
    parser.add_argument("--gunicorn-threads", type=int, default=4, help="as scripts/run.sh")
    parser.add_argument("--conn-max-age", type=int, default=0, help="DB_CONN_MAX_AGE for gunicorn (default 0)")
    args = parser.parse_args()
    with _common.servers() as env:
        report(args, env)


def report(args: argparse.Namespace, env: dict[str, str]) -> None:
    from controlroom.access import system_access
    from controlroom.services import api_token_create
    from runs.models import EventType, Phase, RunEvent

    workspace, job, _ = _common.world()
    runs = max(1, args.phases // args.per_run)
    total = runs * args.per_run
    _common.say(f"queueing {total} phases")
    _common.queue_phases(workspace, job, runs=runs, per_run=args.per_run)
    _common.copy_phase_table(BARE_TABLE)
    _, token = api_token_create(access=system_access(workspace), name="bench", role="operator")

    bare_s, bare_n = _common.drain(lambda i: _common.bare_claim_loop(env["DATABASE_URL"], BARE_TABLE), args.clients,
                                   poll=lambda: "bare psycopg loop draining")

    _common.say("starting gunicorn")
    with gunicorn(args, env) as base:
        errors: list[str] = []
        counts = [0] * args.clients

        def client(i: int) -> None:
            while True:
                status, body = post(base + "/api/v1/ops/claim", token, {"executor": f"http-{i}", "kinds": ["python"]})
                if status == 204:
                    return
                if status != 200:
                    errors.append(f"claim {status}: {body}")
                    return
                status, done = post(base + f"/api/v1/ops/phases/{body['phase']['id']}/complete", token,
                                    {"lease_token": body["lease_token"], "outcome": "succeeded"})
                if status != 200:
                    errors.append(f"complete {status}: {done}")
                    return
                counts[i] += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            _common.say(f"draining over HTTP: {sum(counts)}/{total}")
            time.sleep(0.5)
        http_s, http_n = time.monotonic() - start, sum(counts)
        _common.say("")

    rows, wrong = _common.claimed_once("runs_phase")
    claims = RunEvent.objects.filter(type=EventType.PHASE_CLAIMED).count()
    left = Phase.objects.exclude(state="succeeded").count()
    bare_rate, http_rate = bare_n / bare_s, http_n / http_s
    print(f"claim throughput over HTTP on PostgreSQL: {total} phases ({runs} runs x {args.per_run}), "
          f"{args.clients} client threads, gunicorn {args.gunicorn_workers} workers x {args.gunicorn_threads} "
          f"threads, DB_CONN_MAX_AGE={args.conn_max_age}, {os.cpu_count()} CPUs")
    print(f"  bare psycopg SKIP LOCKED + UPDATE   {bare_rate:8.0f} phases/s  ({bare_n} in {bare_s:.1f} s)")
    print(f"  POST claim + POST complete          {http_rate:8.0f} phases/s  ({http_n} in {http_s:.1f} s, "
          f"{1000 * args.clients / http_rate:.0f} ms per phase per client)")
    print(f"  ratio (HTTP / bare)                 {http_rate / bare_rate:8.2f}")
    verdict = "yes" if wrong == 0 and rows == total and claims == total else "NO"
    print(f"  every phase claimed exactly once    {verdict:>8}   ({rows} phases, {wrong} with attempt != 1 or not "
          f"succeeded, {claims} PHASE_CLAIMED events, {left} not succeeded)")
    print(f"  HTTP errors                         {len(errors):8d}   {errors[:3] if errors else ''}")


if __name__ == "__main__":
    main()
