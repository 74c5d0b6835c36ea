"""Shared set-up of the benchmarks that need real servers (not a benchmark itself).

``with servers(redis=True) as env:`` starts a throwaway PostgreSQL (and Redis) from the Debian
packages, points Django at it, sets Django up and migrates; everything stops on the way out.
Import this module before anything from Django or the project.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if "CONTROLROOM_DATA_DIR" not in os.environ:  # a scratch data dir of our own, removed at exit
    os.environ["CONTROLROOM_DATA_DIR"] = tempfile.mkdtemp(prefix="cr-bench-")
    atexit.register(shutil.rmtree, os.environ["CONTROLROOM_DATA_DIR"], ignore_errors=True)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlroom.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from tests.servers import PostgresServer, RedisServer  # noqa: E402

TICK_SPEC = """\
name: tick
phases:
  - name: tick
    kind: python
    config: {callable: sleep, args: {seconds: 0}}
"""


def say(message: str) -> None:
    """A progress line on stderr (stdout carries only the figures)."""
    print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)


@contextlib.contextmanager
def servers(*, redis: bool = False) -> Iterator[dict[str, str]]:
    """PostgreSQL (and Redis) for this process; Django set up on them and migrated."""
    with contextlib.ExitStack() as stack:
        say("starting PostgreSQL")
        env = {"DATABASE_URL": stack.enter_context(PostgresServer())}
        if redis:
            say("starting Redis")
            env["CELERY_BROKER_URL"] = stack.enter_context(RedisServer())
        os.environ.update(env)
        import django
        from django.core.management import call_command

        django.setup()
        say("migrating")
        call_command("migrate", verbosity=0)
        say("")
        try:
            yield env
        finally:
            from django.db import connections

            connections.close_all()


def world(spec_text: str = TICK_SPEC):
    """A user who is admin of workspace 'bench', and a job of ``spec_text`` there."""
    from django.contrib.auth import get_user_model

    from controlroom.access import system_access
    from controlroom.services import workspace_create
    from runs.services.jobs import job_create

    user = get_user_model().objects.create_user(username="bench", password="bench-password-unused")  # noqa: S106
    workspace = workspace_create(name="Bench", slug="bench", owner=user)
    job = job_create(access=system_access(workspace), spec_text=spec_text)
    return workspace, job, user


def queue_phases(workspace, job, *, runs: int, per_run: int) -> list[int]:
    """Bulk-insert queued runs of ``per_run`` independent pending python phases; returns run ids."""
    from runs.models import Phase, Run

    env = workspace.environments.get(name="dev")
    made = Run.objects.bulk_create(
        [Run(workspace=workspace, environment=env, job=job, job_version=job.current_version, trigger=Run.Trigger.API,
             created_by_label="bench") for _ in range(runs)], batch_size=2000)
    config = {"callable": "sleep", "args": {"seconds": 0}}
    phases = (Phase(run_id=run.pk, name=f"p{i}", position=i, kind="python", config=config, depends_on=[],
                    blocked=False) for run in made for i in range(per_run))
    Phase.objects.bulk_create(phases, batch_size=5000)
    return [run.pk for run in made]


def drain(worker: Callable[[int], int], workers: int, poll: Callable[[], str] | None = None) -> tuple[float, int]:
    """Run ``worker(i)`` in ``workers`` forked processes started together; returns (wall seconds,
    items done). Each child opens its own database connections. ``poll`` is called in the parent
    while they run (a progress line, say)."""
    from django.db import connections

    connections.close_all()  # never share a socket with the children
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(workers + 1), ctx.Queue()

    def child(i: int) -> None:
        barrier.wait()
        start = time.monotonic()
        done = worker(i)
        results.put((start, time.monotonic(), done))
        connections.close_all()

    procs = [ctx.Process(target=child, args=(i,), daemon=True) for i in range(workers)]
    for proc in procs:
        proc.start()
    barrier.wait()
    got = []
    while len(got) < workers:
        with contextlib.suppress(Exception):
            got.append(results.get(timeout=0.2))
            continue
        if poll is not None:
            say(poll())
        if any(p.exitcode not in (None, 0) for p in procs):
            raise SystemExit(f"a worker process died: exit codes {[p.exitcode for p in procs]}")
    for proc in procs:
        proc.join()
    say("")
    return max(g[1] for g in got) - min(g[0] for g in got), sum(g[2] for g in got)


def bare_claim_loop(conninfo: str, table: str, conn=None) -> int:
    """The floor: SKIP LOCKED pick + UPDATE with plain psycopg, one transaction per phase
    (on ``conn`` if given, else on a connection of its own)."""
    import psycopg

    done = 0
    with contextlib.nullcontext(conn) if conn is not None else psycopg.connect(conninfo) as conn:
        while True:
            with conn.transaction(), conn.cursor() as cur:
                row = cur.execute(
                    f"SELECT id FROM {table} WHERE state = 'pending' AND blocked = false AND kind = 'python' "
                    "ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1").fetchone()
                if row is None:
                    return done
                cur.execute(f"UPDATE {table} SET state = 'succeeded', attempt = attempt + 1 WHERE id = %s", row)
            done += 1


def copy_phase_table(table: str, where: str = "true") -> None:
    """``table``: a fresh copy of runs_phase (same columns and indexes) with every phase pending."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (LIKE runs_phase INCLUDING ALL)")
        cur.execute(f"INSERT INTO {table} SELECT * FROM runs_phase WHERE {where}")
        cur.execute(f"UPDATE {table} SET state = 'pending', attempt = 0")
        cur.execute(f"VACUUM ANALYZE {table}")
        cur.execute("VACUUM ANALYZE runs_phase")
        cur.execute("VACUUM ANALYZE runs_run")


def claimed_once(table: str) -> tuple[int, int]:
    """(rows, rows whose attempt is not exactly 1) of ``table``."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*), count(*) FILTER (WHERE attempt <> 1 OR state <> 'succeeded') FROM {table}")
        return cur.fetchone()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


median = statistics.median


@contextlib.contextmanager
def trino_connection(workspace) -> Iterator:
    """A real Trino server (tests/trino_server.py) and a workspace Connection to it, impersonating
    end users through the service user, as production does."""
    from urllib.parse import unquote, urlsplit

    from connections.models import Connection, SecretRef
    from tests.trino_server import TrinoServer

    say("starting Trino")
    server = TrinoServer()
    server.start()
    try:
        parts = urlsplit(server.credentials_url)
        os.environ["CONTROLROOM_SECRET_BENCH_TRINO_PASSWORD"] = unquote(parts.password or "")
        secret = SecretRef.objects.create(workspace=workspace, name="trino-password", source="env",
                                          locator="CONTROLROOM_SECRET_BENCH_TRINO_PASSWORD")
        connection = Connection.objects.create(
            workspace=workspace, name="trino", kind="trino", password_ref=secret,
            config={"host": parts.hostname, "port": parts.port, "http_scheme": parts.scheme, "user": server.user,
                    "verify": str(server.ca_file), "catalog": "tpch", "schema": "tiny"})
        say("")
        yield server, connection
    finally:
        server.stop()
