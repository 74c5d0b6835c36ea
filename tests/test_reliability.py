"""Reliability of the run engine with real worker processes and real failures.

* kill -9 of a worker mid-phase, over and over: the reaper requeues the expired lease, a new
  worker retries, and each phase's side effect is committed exactly once;
* a stalled (SIGSTOP) worker that wakes up after its lease was taken over commits nothing;
* a Redis restart (every queued message lost) and, on PostgreSQL, the worker's database
  connections killed mid-phase: every run still ends succeeded;
* two worker processes racing on the same phases never both run one.

"Committed exactly once" with fencing: a phase's work may *execute* more than once (a killed
or stalled attempt may already have done it; see the journal file), but only the attempt that
holds the live lease can commit an outcome, because phase_complete checks the lease token in
the transaction that writes the outcome. So per phase: exactly one PHASE_SUCCEEDED, its output
names the final attempt and that attempt's lease token, and that token appears once in the
journal. Per run, event ``seq`` runs 1..N without gaps or duplicates.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, connections

from runs.models import EventType, Phase, PhaseState, Run, RunEvent, RunStatus
from runs.services.jobs import job_create
from runs.services.runs import run_create
from runs.tasks import phase_execute, reap_expired_leases
from tests.servers import SERVERS_PID_VAR, RedisServer
from tests.workers import WorkerPool, celery_broker, private_broker, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CALLABLE_MODULES = ["runs.builtin_callables", "tests.reliability_callables"]
LEASE_TTL_S = 2
BATCH = 4  # runs in flight per kill; the worker runs them all at once (concurrency BATCH)
KILLED_RUNS = 20
REAP_EVERY_S = 0.5
TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def broker(redis_server_url: str) -> Iterator[str]:
    """A Redis database of our own on the shared server (stray messages stay out of other tests)."""
    with private_broker(redis_server_url, 7) as url:
        yield url


@pytest.fixture
def reliability(settings) -> None:
    settings.PHASE_LEASE_TTL_S = LEASE_TTL_S
    settings.RUN_STALL_S = 3  # the reaper wakes runs left idle by a lost message after 3 s
    settings.PHASE_CALLABLE_MODULES = CALLABLE_MODULES


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.txt"
    path.touch()
    return path


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[[str], WorkerPool]]:
    """``pools(broker_url)``: a WorkerPool whose workers all die when the test ends."""
    made: list[WorkerPool] = []

    def make(broker_url: str) -> WorkerPool:
        env = worker_env(broker_url=broker_url, data_dir=tmp_path / "worker-data",
                         PHASE_LEASE_TTL_S=str(LEASE_TTL_S), PHASE_CALLABLE_MODULES=",".join(CALLABLE_MODULES))
        made.append(WorkerPool(env=env, log_dir=tmp_path))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


# --- helpers --------------------------------------------------------------------------------


def side_effect_job(world, name: str, journal: Path, *, seconds: float, retries: int):
    steps = max(1, round(seconds / 0.1))
    spec = (f"name: {name}\nphases:\n  - name: effect\n    kind: python\n    retries: {retries}\n    timeout: 300\n"
            f"    config:\n      callable: slow_side_effect\n"
            f"      args: {{journal: '{journal}', seconds: {seconds}, steps: {steps}}}\n")
    return job_create(access=world.access("operator"), spec_text=spec)


def start_runs(world, job, count: int) -> list[int]:
    """Create runs; run_create wakes a worker through the broker."""
    return [run_create(access=world.access("operator"), job=job).pk for _ in range(count)]


def reap() -> None:
    """Run the beat task reap_expired_leases in the test process (its messages go to Redis)."""
    reap_expired_leases.apply()


def diagnose(run_ids: list[int], pool: WorkerPool | None = None, *, events: bool = True) -> str:
    lines = []
    for run in Run.objects.filter(pk__in=run_ids).exclude(status=RunStatus.SUCCEEDED).order_by("pk"):
        lines.append(f"run {run.pk}: {run.status} {run.error[:300]}")
        for p in run.phases.all():
            lines.append(f"  phase {p.pk} {p.name}: {p.state} attempt {p.attempt}/{p.max_attempts} "
                         f"not_before={p.not_before} lease_expires_at={p.lease_expires_at} worker={p.worker} "
                         f"error={p.error[:200]!r}")
        for e in run.events.order_by("seq") if events else ():
            lines.append(f"    #{e.seq} {e.type} {e.message[:120]}")
    if pool is not None:
        lines.append(pool.logs(2500))
    return "\n".join(lines)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, run_ids: list[int],
             pool: WorkerPool | None = None, reaping: bool = True) -> None:
    """Poll ``condition`` (reaping every REAP_EVERY_S if asked) until it holds or time is up."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s\n{diagnose(run_ids, pool)}")
        if reaping:
            reap()
        time.sleep(REAP_EVERY_S if reaping else 0.05)


def all_terminal(run_ids: list[int]) -> Callable[[], bool]:
    return lambda: not Run.objects.filter(pk__in=run_ids).exclude(status__in=TERMINAL).exists()


def running_and_started(run_ids: list[int], count: int) -> Callable[[], bool]:
    """``count`` phases are RUNNING and their callable has logged its first line."""

    def check() -> bool:
        running = Phase.objects.filter(run_id__in=run_ids, state=PhaseState.RUNNING)
        started = sum(
            RunEvent.objects.filter(phase=p, type=EventType.PHASE_LOG, message__startswith=f"attempt {p.attempt} ")
            .exists() for p in running
        )
        return started >= count

    return check


def journal_entries(journal: Path) -> dict[str, list[tuple[int, str, int]]]:
    """key -> [(attempt, lease token, pid)] for every execution that reached its side effect."""
    found: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for line in journal.read_text().splitlines():
        key, attempt, token, pid = line.split()
        found[key].append((int(attempt), token, int(pid)))
    return found


def run_problems(run_ids: list[int], journal: Path) -> list[str]:
    """Every broken invariant of these runs (see the module docstring)."""
    problems: list[str] = []
    effects = journal_entries(journal)
    for run in Run.objects.filter(pk__in=run_ids).order_by("pk"):
        events = list(run.events.order_by("seq").values_list("seq", "type", "phase_id"))
        seqs = [seq for seq, _, _ in events]
        if seqs != list(range(1, len(seqs) + 1)) or run.last_seq != len(seqs):
            problems.append(f"run {run.pk}: seq {seqs} (last_seq {run.last_seq})")
        if run.status != RunStatus.SUCCEEDED:
            problems.append(f"run {run.pk}: {run.status}: {run.error[:300]}")
        run_types = [t for _, t, _ in events]
        if run_types.count(EventType.RUN_SUCCEEDED) != 1 or run_types[-1:] != [EventType.RUN_SUCCEEDED]:
            problems.append(f"run {run.pk}: events do not end with one RUN_SUCCEEDED: {run_types}")
        for phase in run.phases.all():
            counts = Counter(t for _, t, phase_id in events if phase_id == phase.pk)
            key, output = f"{run.pk}:{phase.name}", phase.output
            if counts[EventType.PHASE_SUCCEEDED] != 1:
                problems.append(f"phase {key}: {counts[EventType.PHASE_SUCCEEDED]} PHASE_SUCCEEDED")
            if counts[EventType.PHASE_CLAIMED] != phase.attempt:
                problems.append(f"phase {key}: {counts[EventType.PHASE_CLAIMED]} claims for {phase.attempt} attempts")
            if counts[EventType.PHASE_STARTED] > counts[EventType.PHASE_CLAIMED]:
                problems.append(f"phase {key}: more PHASE_STARTED than claims: {dict(counts)}")
            if output.get("effect") != key or output.get("attempt") != phase.attempt:
                problems.append(f"phase {key}: committed output {output} is not the final attempt {phase.attempt}")
            committed = [e for e in effects.get(key, []) if e[1] == output.get("token")]
            if len(committed) != 1:
                problems.append(f"phase {key}: committed token {output.get('token')} found {len(committed)} times "
                                f"in the journal {effects.get(key)}")
    return problems


def db_busy() -> bool:
    """Whether some other connection is inside a transaction (a paused worker would hold its locks)."""
    if connection.vendor == "postgresql":
        time.sleep(0.05)  # a statement the paused client had already sent finishes on the server
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")
            return cursor.fetchone()[0] > 0
    probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.1, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def terminate_other_backends() -> int:
    """Kill every other connection to the test database (PostgreSQL): the workers' ones."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def restart_postgres() -> int:
    """Restart the suite's PostgreSQL server (the `python -m tests.servers` CLI does it on
    SIGUSR1) and wait until it serves again; returns 1. Without the CLI (a developer's own
    DATABASE_URL) the workers' connections are terminated instead, the nearest thing."""
    pid = os.environ.get(SERVERS_PID_VAR)
    if not pid:
        return terminate_other_backends()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        before = cursor.fetchone()[0]
    os.kill(int(pid), signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        connections.close_all()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_postmaster_start_time()")
                if cursor.fetchone()[0] != before:
                    return 1
        except DatabaseError:
            pass
        time.sleep(0.2)
    raise AssertionError("PostgreSQL did not come back within 60 s")


# --- tests ----------------------------------------------------------------------------------


def test_kill_9_mid_phase_commits_each_side_effect_exactly_once(world, reliability, broker, pools, journal):
    rng = random.Random(20240611)
    pool = pools(broker)
    job = side_effect_job(world, "kill-loop", journal, seconds=1.2, retries=3)
    worker = pool.start(concurrency=BATCH, name="k").wait_ready()
    all_runs: list[int] = []
    killed: dict[int, str] = {}  # phase id -> lease token of the attempt that died with the worker
    batches = 0
    while len(killed) < KILLED_RUNS:
        batches += 1
        assert batches <= KILLED_RUNS // BATCH + 3, f"only {len(killed)} phases were running at the kills"
        run_ids = start_runs(world, job, BATCH)
        all_runs += run_ids
        if batches % 2:  # kill mid-callable...
            wait_for(running_and_started(run_ids, BATCH), timeout=30, what="all phases running", run_ids=run_ids,
                     pool=pool)
            time.sleep(rng.uniform(0, 0.5))
        else:  # ...or as soon as the claims are in (maybe inside a transaction)
            wait_for(lambda ids=run_ids: Phase.objects.filter(run_id__in=ids, state=PhaseState.RUNNING).count()
                     == BATCH, timeout=30, what="all phases claimed", run_ids=run_ids, pool=pool, reaping=False)
        worker.kill()
        killed.update(Phase.objects.filter(run_id__in=run_ids, state=PhaseState.RUNNING)
                      .values_list("pk", "lease_token"))
        worker = pool.start(concurrency=BATCH, name="k")
        wait_for(all_terminal(run_ids), timeout=60, what=f"batch {batches} finished", run_ids=run_ids, pool=pool)

    # A stalled worker (SIGSTOP: a long GC pause, a frozen VM) loses its leases, and when it
    # wakes up it must commit nothing: the fencing token, not the kill, keeps the outcome single.
    worker.wait_ready()
    stalled_runs = start_runs(world, job, BATCH)
    all_runs += stalled_runs
    wait_for(running_and_started(stalled_runs, BATCH), timeout=30, what="stalled batch running",
             run_ids=stalled_runs, pool=pool)
    for _ in range(100):  # pause it between transactions, or its locks would stall everyone
        worker.pause()
        if not db_busy():
            break
        worker.resume()
        time.sleep(0.02)
    else:
        raise AssertionError("could not pause the worker outside a transaction")
    stale = dict(Phase.objects.filter(run_id__in=stalled_runs, state=PhaseState.RUNNING)
                 .values_list("pk", "lease_token"))
    standby = pool.start(concurrency=BATCH, name="k")
    wait_for(all_terminal(stalled_runs), timeout=60, what="runs of the stalled worker finished elsewhere",
             run_ids=stalled_runs, pool=pool)

    def snapshot() -> tuple:
        return (list(RunEvent.objects.filter(run_id__in=stalled_runs).order_by("pk").values_list("pk", "type")),
                list(Phase.objects.filter(run_id__in=stalled_runs).order_by("pk")
                     .values_list("state", "attempt", "lease_token", "output")))

    before = snapshot()
    worker.resume()

    def noticed() -> int:  # one line per phase: a "lease lost" warning, or the task failing with StaleLease
        return sum("StaleLease" in line or "lease lost" in line for line in worker.log_text().splitlines())

    wait_for(lambda: noticed() >= len(stale), timeout=20, what="the woken worker noticed its lost leases",
             run_ids=stalled_runs, pool=pool, reaping=False)
    time.sleep(0.5)
    assert snapshot() == before, "a worker whose lease was taken over still wrote something"
    worker.kill()
    standby.kill()

    problems = run_problems(all_runs, journal)
    phases = {p.pk: p for p in Phase.objects.filter(run_id__in=all_runs)}
    expired = set(RunEvent.objects.filter(run_id__in=all_runs, type=EventType.PHASE_LEASE_EXPIRED)
                  .values_list("phase_id", flat=True))
    for phase_id, token in {**killed, **stale}.items():
        phase = phases[phase_id]
        if phase.attempt < 2 or phase.output.get("token") == token or phase_id not in expired:
            problems.append(f"phase {phase.run_id}:{phase.name} lost its worker but attempt={phase.attempt}, "
                            f"output={phase.output}, lease expired event: {phase_id in expired}")
    assert not problems, "\n".join(problems) + "\n" + pool.logs(2000)
    assert len(killed) >= KILLED_RUNS and len(stale) == BATCH


def test_runs_finish_after_a_redis_restart_and_dropped_database_connections(world, reliability, pools, journal):
    """Redis restarts empty (queued and unacked messages are gone); on PostgreSQL the worker's
    connections are also terminated mid-phase. The database row is the truth: the reaper, and
    a re-dispatch of the runs whose wake-up message was lost, must finish every run."""
    postgres = connection.vendor == "postgresql"
    server = RedisServer()  # always our own: the suite's Redis cannot be restarted under other tests
    try:
        url = server.start()
        with celery_broker(url):
            pool = pools(url)
            worker = pool.start(concurrency=2, name="r").wait_ready()
            job = side_effect_job(world, "redis-restart", journal, seconds=1.5, retries=3)
            run_ids = start_runs(world, job, 8)  # 2 run, 6 wait in Redis
            wait_for(running_and_started(run_ids, 2), timeout=30, what="two phases running", run_ids=run_ids,
                     pool=pool, reaping=False)
            server.restart()
            terminated = restart_postgres() if postgres else 0

            # Only what production does on its own: the worker reconnects; beat's reaper requeues
            # expired leases and wakes runs whose messages Redis lost.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all_terminal(run_ids)():
                reap()
                time.sleep(REAP_EVERY_S)
            if postgres:
                terminated += terminate_other_backends()  # and once more while the rest finish
            wait_for(all_terminal(run_ids), timeout=90, what="all runs finished", run_ids=run_ids, pool=pool)

            problems = run_problems(run_ids, journal)
            assert not problems, "\n".join(problems) + "\n" + pool.logs(3000)
            assert worker.alive(), f"the worker did not survive\n{pool.logs()}"
            if postgres:
                assert terminated > 0, "no worker connection was there to terminate"
    finally:
        server.stop()


def test_two_workers_racing_on_the_same_phases_never_both_run_one(world, reliability, broker, pools, journal):
    pool = pools(broker)
    job = side_effect_job(world, "race", journal, seconds=0.3, retries=0)
    run_ids = start_runs(world, job, 30)  # one wake-up each through run_dispatch...
    for phase_id in Phase.objects.filter(run_id__in=run_ids).values_list("pk", flat=True):
        for _ in range(3):  # ...and three duplicate wake-ups per phase, back to back
            phase_execute.delay(phase_id)
    first, second = pool.start(concurrency=2, name="a"), pool.start(concurrency=2, name="b")
    first.wait_ready()
    second.wait_ready()
    groups = {pid: worker.name for worker in (first, second) for pid in worker.pids()}
    wait_for(all_terminal(run_ids), timeout=90, what="all runs finished", run_ids=run_ids, pool=pool)

    problems = run_problems(run_ids, journal)
    effects = journal_entries(journal)
    for phase in Phase.objects.filter(run_id__in=run_ids):
        started = phase.events.filter(type=EventType.PHASE_STARTED).count()
        ran = effects.get(f"{phase.run_id}:{phase.name}", [])
        if started != 1 or phase.attempt != 1 or len(ran) != 1:
            claims = list(phase.events.filter(type=EventType.PHASE_CLAIMED).values_list("message", flat=True))
            problems.append(f"phase {phase.run_id}:{phase.name}: {started} PHASE_STARTED, attempt {phase.attempt}, "
                            f"side effect executed {len(ran)} times {ran}; claims: {claims}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)
    winners = Counter(groups.get(int(w.rsplit(":", 1)[1]), "?")
                      for w in Phase.objects.filter(run_id__in=run_ids).values_list("worker", flat=True))
    assert set(winners) == {first.name, second.name}, f"not a race: phases ran on {dict(winners)}"
