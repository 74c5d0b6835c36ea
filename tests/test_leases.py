"""Leases under real concurrency: racing claims, heartbeats carrying cancel, reaper timeouts."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from runs.models import Phase, PhaseState, Run, RunStatus
from runs.services.jobs import job_create
from runs.services.leases import phase_claim_next
from runs.services.phases import phase_execute, phases_reap
from runs.services.runs import run_cancel, run_create

pytestmark = pytest.mark.django_db(transaction=True)


def make_run(world, spec_text: str, django_capture_on_commit_callbacks) -> Run:
    job = job_create(access=world.access("operator"), spec_text=spec_text)
    with django_capture_on_commit_callbacks(execute=False):
        return run_create(access=world.access("operator"), job=job)


def in_threads(count: int, fn) -> list:
    barrier, results = threading.Barrier(count), [None] * count

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def start_long_query(world, django_capture_on_commit_callbacks) -> tuple[Run, Phase, threading.Thread]:
    """A run whose one sql phase counts 10^11 rows, executing in a thread; returns once it started."""
    run = make_run(world, "name: long\nphases:\n  - {name: a, kind: sql, timeout: 600, "
                          "config: {sql: 'select count(*) from range(100000000000)'}}\n",
                   django_capture_on_commit_callbacks)
    phase = run.phases.get()
    thread = threading.Thread(target=lambda: (phase_execute(phase_id=phase.pk, worker="w"), connections.close_all()))
    thread.start()
    while not run.events.filter(type="PHASE_STARTED").exists():
        thread.join(0.05)
    return run, phase, thread


def test_racing_executors_exactly_one_wins(world, django_capture_on_commit_callbacks):
    for round_ in range(5):
        make_run(world, f"name: race{round_}\nphases:\n  - {{name: a, kind: sql, config: {{sql: select 1}}}}\n",
                 django_capture_on_commit_callbacks)
        wins = in_threads(6, lambda i: phase_claim_next(workspace=world.workspace, worker=f"w{i}", kinds=["sql"]))
        winners = [w for w in wins if w is not None]
        assert len(winners) == 1, f"round {round_}: {len(winners)} winners"
        phase = Phase.objects.get(pk=winners[0][0].pk)
        assert phase.attempt == 1 and phase.lease_token == winners[0][1]
        assert phase.run.events.filter(type="PHASE_CLAIMED").count() == 1


def test_cancel_reaches_a_running_python_phase_through_its_heartbeat(world, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.PHASE_LEASE_TTL_S = 1  # heartbeats every ~0.33 s
    run = make_run(world, "name: slow\nphases:\n  - name: a\n    kind: python\n"
                          "    config: {callable: sleep, args: {seconds: 30, steps: 300}}\n",
                   django_capture_on_commit_callbacks)
    phase = run.phases.get()
    result: dict = {}
    thread = threading.Thread(target=lambda: (result.update(p=phase_execute(phase_id=phase.pk, worker="w")),
                                              connections.close_all()))
    thread.start()
    while not run.events.filter(type="PHASE_LOG").exists():
        thread.join(0.05)
    run_cancel(access=world.access("operator"), run=run)
    thread.join(20)
    assert not thread.is_alive()
    phase.refresh_from_db()
    run.refresh_from_db()
    assert (phase.state, run.status) == (PhaseState.CANCELLED, RunStatus.CANCELLED)
    assert run.events.filter(type="PHASE_LOG").count() < 300  # stopped long before the end
    assert list(run.events.values_list("type", flat=True))[-2:] == ["PHASE_CANCELLED", "RUN_CANCELLED"]


@pytest.mark.slow  # waits for real time
def test_cancel_reaches_a_phase_between_lease_renewals(world, settings, django_capture_on_commit_callbacks):
    """With the default 30 s lease the heartbeat renews every 10 s; a cancel does not wait for it:
    the phase looks for one every CANCEL_POLL_S (2 s) with a read, and stops at once."""
    import time

    from runs.services.phases import CANCEL_POLL_S

    settings.PHASE_LEASE_TTL_S = 30
    run, phase, thread = start_long_query(world, django_capture_on_commit_callbacks)
    thread.join(1.0)  # well inside the first 10 s renewal interval
    asked = time.monotonic()
    run_cancel(access=world.access("operator"), run=run)
    thread.join(30)
    took = time.monotonic() - asked
    phase.refresh_from_db()
    assert phase.state == PhaseState.CANCELLED
    # The next renewal was ~9 s away; the cancel poll stopped the phase well before it.
    assert took < CANCEL_POLL_S + 3, f"the phase stopped {took:.1f} s after the cancel"


def test_cancel_interrupts_a_running_duckdb_query(world, settings, django_capture_on_commit_callbacks):
    settings.PHASE_LEASE_TTL_S = 1
    run, phase, thread = start_long_query(world, django_capture_on_commit_callbacks)
    thread.join(0.5)
    run_cancel(access=world.access("operator"), run=run)
    thread.join(30)
    assert not thread.is_alive()
    phase.refresh_from_db()
    assert phase.state == PhaseState.CANCELLED and phase.error == ""


def test_reaper_fails_a_phase_that_overran_its_timeout(world, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("runs.services.phases.retry_delay_s", lambda attempt: 0.0)
    run = make_run(world, "name: t\nphases:\n  - {name: a, kind: sql, timeout: 5, config: {sql: select 1}}\n",
                   django_capture_on_commit_callbacks)
    phase, _ = phase_claim_next(workspace=world.workspace, worker="w", kinds=["sql"])
    Phase.objects.filter(pk=phase.pk).update(started_at=timezone.now() - timedelta(seconds=60))
    assert phases_reap() == [run.pk]
    phase.refresh_from_db()
    run.refresh_from_db()
    assert phase.state == PhaseState.FAILED and phase.error == "timed out after 5 s"
    assert run.status == RunStatus.FAILED


def test_the_reaper_wakes_runs_whose_message_was_lost(world, eager_celery, monkeypatch,
                                                      django_capture_on_commit_callbacks):
    from runs import tasks

    with monkeypatch.context() as patch:
        patch.setattr(tasks.run_dispatch, "delay", lambda run_id: None)  # the broker lost this wake-up
        run = make_run(world, "name: lost\nphases:\n  - {name: a, kind: sql, config: {sql: select 1}}\n",
                       django_capture_on_commit_callbacks)
    reap_expired_leases = tasks.reap_expired_leases
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    reap_expired_leases.apply()
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # quiet for less than 30 s: left alone
    run.events.update(ts=timezone.now() - timedelta(minutes=1))
    reap_expired_leases.apply()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_racing_claims_of_one_phase_by_id_exactly_one_wins(world, django_capture_on_commit_callbacks):
    """The Celery path claims by id; a duplicate message must not make a second winner."""
    from runs.services.leases import phase_claim

    for round_ in range(5):
        run = make_run(world, f"name: byid{round_}\nphases:\n  - {{name: a, kind: sql, config: {{sql: select 1}}}}\n",
                       django_capture_on_commit_callbacks)
        phase_id = run.phases.get().pk
        wins = in_threads(6, lambda i, phase_id=phase_id: phase_claim(phase_id=phase_id, worker=f"w{i}"))
        assert sum(w is not None for w in wins) == 1, f"round {round_}"
        assert Phase.objects.get(pk=phase_id).attempt == 1


def test_phases_ending_together_unblock_their_dependent_and_settle_the_run(world,
                                                                           django_capture_on_commit_callbacks):
    """Two phases of one run succeed at the same instant, round after round. Each completion
    reads the DAG under its own snapshot; neither may miss the other: the dependent that needs
    both must be unblocked, and when they are the last two the run must end."""
    from runs.services.phases import phase_complete

    dag = ("phases:\n  - {name: a, kind: sql, config: {sql: select 1}}\n"
           "  - {name: b, kind: sql, config: {sql: select 1}, depends_on: []}\n")
    for round_ in range(12):
        with_c = round_ % 2 == 0
        spec = f"name: pair{round_}\n{dag}" + (
            "  - {name: c, kind: sql, config: {sql: select 1}, depends_on: [a, b]}\n" if with_c else "")
        run = make_run(world, spec, django_capture_on_commit_callbacks)
        claims = [phase_claim_next(workspace=world.workspace, worker=f"w{i}", kinds=["sql"], run_id=run.pk)
                  for i in range(2)]
        assert all(claims) and {p.name for p, _ in claims} == {"a", "b"}
        in_threads(2, lambda i, claims=claims: phase_complete(phase=claims[i][0], lease_token=claims[i][1],
                                                              succeeded=True))
        if with_c:
            c = Phase.objects.get(run=run, name="c")
            assert not c.blocked, f"round {round_}: c stayed blocked after a and b succeeded together"
            phase, token = phase_claim_next(workspace=world.workspace, worker="w", kinds=["sql"], run_id=run.pk)
            assert phase.name == "c"
            phase_complete(phase=phase, lease_token=token, succeeded=True)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, f"round {round_}: run left {run.status}"
        seqs = list(run.events.values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))


def test_racing_claims_on_queued_runs_all_find_work(world, django_capture_on_commit_callbacks):
    """Claims also admit waiting runs. When several claimers race to do it, the ones whose
    admission found nothing left to admit must still look again, not answer 'no work'."""
    roots = "".join(f"  - {{name: p{i}, kind: sql, config: {{sql: select 1}}, depends_on: []}}\n" for i in range(3))
    runs = [make_run(world, f"name: wide{n}\nphases:\n{roots}", django_capture_on_commit_callbacks) for n in range(2)]
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(status=RunStatus.QUEUED, started_at=None)
    got = in_threads(6, lambda i: phase_claim_next(workspace=world.workspace, worker=f"w{i}", kinds=["sql"]))
    assert all(g is not None for g in got), f"{sum(g is None for g in got)} of 6 claimers found no work"
    assert len({g[0].pk for g in got}) == 6
